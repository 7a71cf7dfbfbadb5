"""The end-of-run summary: what came in, what was archived, dead-lettered and alerted."""

from __future__ import annotations

import sys
from collections import defaultdict

from apache_beam.metrics.metric import MetricsFilter

from schemas.layout import FOLDERS
from schemas.records import SCHEMAS
from transforms.join import LATE_NAMESPACE, LATE_SUFFIX


def counters(result) -> dict[str, int]:
  """Beam counters summed over steps, by name (e.g. ``network_messages``)."""
  totals: dict[str, int] = defaultdict(int)
  try:
    queried = result.metrics().query(MetricsFilter())['counters']
  except Exception:  # pylint: disable=broad-except
    return {}  # a runner that cannot report metrics still ran the job
  for counter in queried:
    totals[f'{counter.key.metric.namespace}.{counter.key.metric.name}'] += (
        counter.committed if counter.committed is not None else counter.attempted or 0)
  return dict(totals)


def print_summary(result, opts, out=None) -> dict[str, int]:
  totals = counters(result)
  if not any(totals.values()):
    # A cancelled portable job reports no metrics: the outputs are the record of the run.
    print(f'\nRun summary ({result.state}): the runner reported no metrics; count the outputs '
          f'under {opts.output} (python -m pipelines.monitor --output {opts.output} --once).',
          file=out or sys.stderr)
    return totals
  dead_by_stream, late_by_stream = defaultdict(int), defaultdict(int)
  for name, value in totals.items():
    if name.endswith('_dead_lettered'):
      dead_by_stream[name.split('.')[-1].rsplit('_dead_lettered', 1)[0]] += value
    elif name.startswith(f'{LATE_NAMESPACE}.') and name.endswith(LATE_SUFFIX):
      # Records too late for the host join are dead letters too (stage join).
      stream = name.split('.')[-1].rsplit(LATE_SUFFIX, 1)[0]
      dead_by_stream[stream] += value
      late_by_stream[stream] += value
  lines = [f'\nRun summary ({result.state}), outputs under {opts.output}:',
           f"  {'stream':<10}{'messages':>12}{'records':>12}{'dead letters':>14}"]
  for stream in SCHEMAS:
    lines.append(
        f"  {stream:<10}{totals.get(f'ParseAndClean.{stream}_messages', 0):>12}"
        f"{totals.get(f'ParseAndClean.{stream}_cleaned', 0):>12}{dead_by_stream[stream]:>14}")
  if late_by_stream:
    lines.append('  late for the host join (dead letters, stage join): ' + ', '.join(
        f'{stream} {count}' for stream, count in sorted(late_by_stream.items())))
  lines.append('  rows written:')
  for folder in FOLDERS:
    rows = totals.get(f'WritePartitionedParquet.{folder}_rows', 0)
    files = totals.get(f'WritePartitionedParquet.{folder}_files', 0)
    lines.append(f'    {folder + "/":<18}{rows:>10} rows in {files} files')
  print('\n'.join(lines), file=out or sys.stderr)
  return totals
