"""pipelines/stage_cpu.py: a DoFn's CPU is its own, not that of the DoFns it feeds; snapshots
read back into per-record costs of a window."""

import json
import os
import subprocess
import sys
import time

import apache_beam as beam

from harness.scripts import ROOT
from pipelines import stage_cpu


def _burn(seconds: float) -> None:
  until = time.thread_time() + seconds
  while time.thread_time() < until:
    pass


class _Producer(beam.DoFn):
  def process(self, batch):
    _burn(0.05)
    for item in batch:
      yield item


def test_a_generator_is_charged_its_own_steps_not_the_work_done_on_what_it_yields():
  key = 'test.Producer.process'
  timed = stage_cpu.timed_method(key, _Producer.process)
  before = stage_cpu._cpu[key], stage_cpu._calls[key], stage_cpu._elements[key]
  outputs = []
  for item in timed(_Producer(), ['a', 'b']):
    _burn(0.1)  # what Beam's downstream DoFns do inside the yield
    outputs.append(item)
  assert outputs == ['a', 'b']
  charged = stage_cpu._cpu[key] - before[0]
  assert 0.045 <= charged < 0.1, charged
  assert stage_cpu._calls[key] - before[1] == 1
  assert stage_cpu._elements[key] - before[2] == 2


def test_a_function_is_charged_its_time_even_when_it_raises():
  key = 'test.Failing.process'

  def process(self, element):
    _burn(0.03)
    raise ValueError('bad element')

  timed = stage_cpu.timed_method(key, process)
  before = stage_cpu._cpu[key]
  try:
    timed(object(), 1)
  except ValueError:
    pass
  else:
    raise AssertionError('the error must reach the caller')
  assert stage_cpu._cpu[key] - before >= 0.025


def test_time_dofns_wraps_the_project_dofns_once_and_keeps_their_signature():
  from transforms.parse import ParseAndCleanFn  # pylint: disable=import-outside-toplevel
  originals = [(cls, name, cls.__dict__[name]) for cls in set(stage_cpu._subclasses(beam.DoFn))
               for name in stage_cpu._METHODS if name in cls.__dict__]
  try:
    stage_cpu.time_dofns()
    wrapped = ParseAndCleanFn.process
    stage_cpu.time_dofns()
    assert ParseAndCleanFn.process is wrapped
    assert getattr(wrapped, 'stage_cpu_timed', False)
    assert wrapped.__wrapped__.__name__ == 'process'  # Beam reads the parameters through it
    assert not getattr(_Producer.process, 'stage_cpu_timed', False)  # a test's DoFn: not ours
  finally:
    for cls, name, method in originals:
      setattr(cls, name, method)
  assert not getattr(ParseAndCleanFn.process, 'stage_cpu_timed', False)


def test_a_window_divides_each_workers_difference_by_the_records(tmp_path):
  def row(when, process, thread, method):
    return {'time': when, 'process_cpu': process, 'threads': {'Thread': thread},
            'methods': {'m.Fn.process': [method, 1, 10]}}
  for pid, rows in (('1.jsonl', [row(100, 1.0, 0.5, 0.2), row(102, 3.0, 2.0, 1.2),
                                 row(104, 9.0, 8.0, 7.2)]),
                    ('2.jsonl', [row(101, 0.5, 0.5, 0.0), row(103, 1.5, 1.0, 0.5)])):
    with open(os.path.join(tmp_path, pid), 'w', encoding='utf-8') as f:
      f.write('\n'.join(json.dumps(r) for r in rows) + '\n')
  snapshots = stage_cpu.read_snapshots(str(tmp_path))
  assert sorted(snapshots) == ['1.jsonl', '2.jsonl']
  # Worker 1 from its 100 s snapshot to its 102 s one; worker 2 from nothing (not started at
  # 100.5 s: all of its CPU is in the window) to its 101 s one.
  per_record = stage_cpu.window(snapshots, 100.5, 102.5, records=1_000_000)
  assert per_record == {'process': round((2.0 + 0.5) / 1e6 * 1e6, 1),
                        'thread Thread': round((1.5 + 0.5) / 1e6 * 1e6, 1),
                        'm.Fn.process': 1.0}
  assert stage_cpu.window(snapshots, 100.5, 102.5, records=0) == {}


def test_a_fresh_worker_times_the_dofns_before_it_sets_any_up(tmp_path):
  """A worker not forked from the fork server has imported none of the DoFns' modules when it
  starts; Beam binds their methods when it sets them up, so they must be wrapped by then."""
  code = ('import sys; from pipelines import stage_cpu; '
          'assert "transforms.parse" not in sys.modules; '
          'assert stage_cpu.install_from_environment(); '
          'from transforms.parse import ParseAndCleanFn; '
          'from apache_beam.ml.inference.base import _RunInferenceDoFn; '
          'assert ParseAndCleanFn.process.stage_cpu_timed; '
          'assert _RunInferenceDoFn.process.stage_cpu_timed; '
          'stage_cpu._write_snapshot(sys.argv[1])')
  subprocess.run([sys.executable, '-c', code, str(tmp_path)], check=True, cwd=ROOT, timeout=120,
                 env=dict(os.environ, **{stage_cpu.DIR_ENV: str(tmp_path)}))
  (rows,) = stage_cpu.read_snapshots(str(tmp_path)).values()
  assert rows[-1]['process_cpu'] > 0 and rows[-1]['threads']


def test_install_from_environment_is_off_without_its_variable(monkeypatch):
  monkeypatch.delenv(stage_cpu.DIR_ENV, raising=False)
  assert stage_cpu.install_from_environment() is False
