"""Rewrites the "Latest results" section of benchmarks/README.md from benchmarks/results/*.json.

    python -m benchmarks.report

The throughput and latency benchmarks call it themselves when they write to the default
results folder, so one command re-measures a figure and refreshes the README's table.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from benchmarks import common

README = os.path.join(common.ROOT, 'benchmarks', 'README.md')
START, END = '<!-- results:start -->', '<!-- results:end -->'
FIGURES = (
    ('throughput', 'Throughput', 'python -m benchmarks.throughput'),
    ('latency', 'Latency', 'python -m benchmarks.latency'),
    ('stages', 'Per-stage cost and batch-size sweep', 'python -m benchmarks.stages'),
    ('peer', 'Side by side with the PySpark peer', 'python -m benchmarks.peer'),
)


def _load(name: str, results_dir: str) -> Optional[dict]:
  path = os.path.join(results_dir, f'{name}.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def section(results_dir: str = common.DEFAULT_RESULTS) -> str:
  parts = []
  for name, title, command in FIGURES:
    data = _load(name, results_dir)
    parts.append(f'### {title}\n')
    if data is None:
      parts.append(f'Not yet measured: run `{command}`.\n')
      continue
    machine = data.get('machine') or {}
    parts.append(f"`{command}`, measured {machine.get('when_utc', '?')} UTC, git "
                 f"{machine.get('git', '?')}, load average at start "
                 f"{machine.get('load_avg_at_start', '?')} on {machine.get('cores', '?')} cores.\n")
    table = data.get('table')
    if table:
      parts.append('```\n' + table.rstrip() + '\n```\n')
    if os.path.exists(os.path.join(results_dir, f'{name}.png')):
      parts.append(f'![{name}](results/{name}.png)\n')
  return '\n'.join(parts)


def update_readme(results_dir: str = common.DEFAULT_RESULTS, readme: str = README) -> bool:
  """Replaces the text between the markers; False when the README has none."""
  if not os.path.exists(readme):
    return False
  with open(readme, encoding='utf-8') as f:
    text = f.read()
  if START not in text or END not in text:
    return False
  head, rest = text.split(START, 1)
  _, tail = rest.split(END, 1)
  with open(readme, 'w', encoding='utf-8') as f:
    f.write(head + START + '\n' + section(results_dir) + END + tail)
  return True


def refresh_readme(results_dir: str) -> None:
  """After a benchmark wrote its results: the README shows only the default folder's."""
  if os.path.abspath(results_dir) == os.path.abspath(common.DEFAULT_RESULTS) and update_readme():
    print(f'updated {README}')


if __name__ == '__main__':
  print('updated' if update_readme() else f'no {START} ... {END} markers in', README)


def publish(results_dir: str, name: str, result: dict, plot, table: str, as_json=None) -> dict:
  """The end of every benchmark run: ``<name>.png`` drawn by ``plot(result, path)``, the
  table kept in ``result`` and printed, ``<name>.json`` written (through ``as_json`` when
  the result holds values JSON cannot), and the README's "Latest results" refreshed."""
  os.makedirs(results_dir, exist_ok=True)
  png = os.path.join(results_dir, f'{name}.png')
  plot(result, png)
  result['table'] = table
  path = common.write_json(results_dir, name, as_json(result) if as_json else result)
  print(table)
  print(f'\nwrote {path} and {png}')
  refresh_readme(results_dir)
  return result
