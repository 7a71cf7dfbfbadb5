"""The SparkRunner's set-up (pipelines/runners.py, Spark section): the defaults a job on Spark
gets, and the streaming job's refusal, up front, before any JVM starts."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pipelines import runners


@pytest.fixture
def spark_jar(tmp_path, monkeypatch):
  """A stand-in for the pinned jar in a jars folder of its own (only its path is used here)."""
  monkeypatch.setenv('BEAM_JARS_DIR', str(tmp_path))
  jar = tmp_path / runners.SPARK_JOB_SERVER_JAR
  jar.write_bytes(b'')
  return str(jar)


def _values(argv):
  return {a.split('=', 1)[0]: a.split('=', 1)[1] for a in argv if '=' in a}


def test_a_batch_job_on_spark_gets_the_pinned_jar_local_spark_and_process_workers(spark_jar):
  argv = runners.with_runner_defaults(['--runner=SparkRunner'], runners.BATCH)
  values = _values(argv)
  assert values['--spark_job_server_jar'] == spark_jar
  assert values['--spark_master_url'] == runners.EMBEDDED_SPARK_MASTER == 'local[2]'
  assert values['--environment_type'] == 'PROCESS'
  assert json.loads(values['--environment_config']) == {'command': runners.SDK_WORKER_SCRIPT}
  assert int(values['--sdk_worker_parallelism']) >= 1
  # Flink's defaults stay Flink's.
  assert not any(a.startswith(('--flink', '--checkpointing_interval')) for a in argv)


def test_what_the_command_line_says_wins(spark_jar):
  argv = runners.with_runner_defaults(
      ['--runner=SparkRunner', '--spark_master_url=spark://127.0.0.1:7077',
       '--environment_type=LOOPBACK'], runners.BATCH)
  values = _values(argv)
  assert values['--spark_master_url'] == 'spark://127.0.0.1:7077'
  assert values['--environment_type'] == 'LOOPBACK'
  assert '--environment_config' not in values and '--sdk_worker_parallelism' not in values
  assert argv.count('--spark_master_url=spark://127.0.0.1:7077') == 1


def test_a_missing_jar_says_how_to_build_it(tmp_path, monkeypatch):
  monkeypatch.setenv('BEAM_JARS_DIR', str(tmp_path))
  with pytest.raises(FileNotFoundError, match='scripts/fetch_jars.sh'):
    runners.with_runner_defaults(['--runner=SparkRunner'], runners.BATCH)


@pytest.mark.parametrize('master, local', [('local[2]', True), ('local', True),
                                           ('local[*]', True), (None, True),
                                           ('spark://127.0.0.1:7077', False),
                                           ('spark://spark-master:7077', False)])
def test_which_masters_are_embedded(master, local):
  assert runners.is_local_spark(master) is local


def test_a_streaming_job_on_spark_is_refused_with_the_reasons():
  with pytest.raises(SystemExit) as refused:
    runners.with_runner_defaults(['--runner=SparkRunner'], runners.STREAMING)
  message = str(refused.value)
  for missing in ('state', 'timers', 'splittable DoFn', 'apache/beam#20396',
                  'apache/beam#20397', 'apache/beam#20979', '--source=files'):
    assert missing in message


def test_the_stream_job_from_kafka_on_spark_refuses_at_once(tmp_path):
  """The real command: it exits with the reasons, without starting a JVM or waiting on a
  broker (none listens on that port)."""
  started = time.monotonic()
  proc = subprocess.run(
      [sys.executable, '-m', 'pipelines.stream', '--runner=SparkRunner',
       '--bootstrap_servers=127.0.0.1:1', f'--output={tmp_path / "out"}',
       f'--model_dir={tmp_path / "models"}'],
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert 'apache/beam#20396' in proc.stderr and 'apache/beam#20979' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert time.monotonic() - started < 60
  assert not (tmp_path / 'out').exists()
