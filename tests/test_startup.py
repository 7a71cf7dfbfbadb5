"""The stream job's startup line (pipelines/startup.py) and the SDK worker's (sdk_worker.py)."""

import logging
import os
import subprocess
import sys
import time

import pytest

from pipelines import startup
from pipelines.sdk_worker import StartupLine


def test_phases_are_the_time_between_marks_and_add_up_to_the_total():
  timeline = startup.StartupTimeline(started=100.0)
  timeline.mark(startup.PYTHON_START, at=103.0)
  timeline.mark(startup.JOB_SERVER, at=107.5)
  timeline.mark(startup.JOB_SERVER, at=200.0)  # a second mark keeps the first end
  timeline.mark(startup.FIRST_OUTPUT, at=112.0)
  assert timeline.phases() == [(startup.PYTHON_START, 3.0), (startup.JOB_SERVER, 4.5),
                               (startup.FIRST_OUTPUT, 4.5)]
  line = timeline.summary()
  assert line.startswith('startup: first archived row 12.0 s after the process started: ')
  assert 'python start 3.0 s, job server 4.5 s, first output 4.5 s' in line


def test_a_job_without_output_yet_says_what_it_saw_last():
  timeline = startup.StartupTimeline(started=0.0)
  assert timeline.summary() == 'startup: no phase seen'
  timeline.mark(startup.SUBMISSION, at=30.0)
  assert timeline.summary().startswith(
      'startup: no archived row yet; submission done 30.0 s after the process started')


def test_process_start_time_is_this_process_start():
  child = subprocess.run(
      [sys.executable, '-c', 'import time; from pipelines.startup import process_start_time; '
       'print(time.time() - process_start_time())'],
      check=True, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  age = float(child.stdout)
  # The child measured its own age after importing Beam: more than 0, less than a minute.
  assert 0 < age < 60


def _write(path: str, mtime: float) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(b'PAR1')
  os.utime(path, (mtime, mtime))


def test_first_archive_file_is_the_earliest_finished_one_of_this_run(tmp_path):
  now = time.time()
  out = str(tmp_path)
  _write(f'{out}/archive/network/dt=2026-12-01/old-run-1-0.parquet', now - 3600)  # earlier run
  _write(f'{out}/archive/network/dt=2026-12-01/.half.parquet.inprogress', now + 1)
  _write(f'{out}/alerts/dt=2026-12-01/a-1-0.parquet', now + 2)  # not the archive
  assert startup.first_archive_file_since(out, now) is None
  _write(f'{out}/archive/process/dt=2026-12-01/site-run-1-0.parquet', now + 5)
  _write(f'{out}/archive/network/dt=2026-12-01/site-run-2-0.parquet', now + 9)
  assert startup.first_archive_file_since(out, now) == pytest.approx(now + 5, abs=0.01)


def test_watch_logs_the_line_at_the_first_archived_row(tmp_path, caplog):
  timeline = startup.StartupTimeline(started=time.time() - 2)
  timeline.mark(startup.SUBMISSION)
  out = str(tmp_path)
  with caplog.at_level(logging.INFO, logger='pipelines.startup'):
    with startup.watch(timeline, result=None, flink_rest_url=None, output=out, every_s=0.05):
      time.sleep(0.2)
      assert not timeline.logged
      _write(f'{out}/archive/network/dt=2026-12-01/site-run-1-0.parquet', time.time())
      deadline = time.time() + 5
      while not timeline.logged and time.time() < deadline:
        time.sleep(0.05)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('startup:')]
  assert len(lines) == 1 and 'first output' in lines[0] and 'submission' in lines[0]


def test_watch_logs_what_it_saw_when_the_job_ends_first(tmp_path, caplog):
  timeline = startup.StartupTimeline(started=time.time())
  timeline.mark(startup.SUBMISSION)
  with caplog.at_level(logging.INFO, logger='pipelines.startup'):
    with startup.watch(timeline, None, None, str(tmp_path), every_s=0.05):
      pass
  assert [r.getMessage()[:32] for r in caplog.records] == ['startup: no archived row yet; su']


def test_the_worker_logs_its_phases_once_when_the_harness_starts(caplog):
  timeline = startup.StartupTimeline(started=time.time() - 4)
  timeline.mark('python start and imports')
  line = StartupLine('1-2', timeline)
  starting = logging.LogRecord('apache_beam.runners.worker.sdk_worker_main', logging.INFO,
                               __file__, 1, StartupLine.HARNESS_STARTING, (), None)
  with caplog.at_level(logging.INFO, logger='pipelines.sdk_worker'):
    assert line.filter(starting) and line.filter(starting)
  messages = [r.getMessage() for r in caplog.records if r.name == 'pipelines.sdk_worker']
  assert len(messages) == 1
  assert messages[0].startswith('SDK worker 1-2 started in 4.')
  assert 'python start and imports 4.' in messages[0] and 'harness 0.0 s' in messages[0]


def test_parse_summary_reads_back_the_line_it_logs():
  timeline = startup.StartupTimeline(started=10.0)
  timeline.mark(startup.PYTHON_START, at=12.5)
  timeline.mark(startup.FLINK_DEPLOYMENT, at=20.0)
  timeline.mark(startup.FIRST_OUTPUT, at=21.25)
  log = f'noise\n2026-12-01 14:48:29,402 INFO pipelines.startup {timeline.summary()}\nmore'
  assert startup.parse_summary(log) == {'python start': 2.5, 'Flink deployment': 7.5,
                                        'first output': 1.2}
  assert startup.parse_summary('no such line') is None
