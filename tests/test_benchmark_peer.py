"""benchmarks.peer's own logic without Kafka, Flink or Spark: the row-for-row comparison of two
archives, and the jar names it leaves out because pyspark ships them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import common, peer
from harness.procs import cpu_ticks


def _archive(uuids, predictions, version='v1'):
  return pa.table({'uuid': pa.array(uuids, pa.string()),
                   'prediction': pa.array(predictions, pa.int64()),
                   'score': pa.array([0.9 if p else 0.1 for p in predictions], pa.float64()),
                   'model_version': pa.array([version] * len(uuids), pa.string())})


REFERENCE = _archive(['a', 'b', 'c', 'd'], [0, 1, 0, 1])


def test_identical_outputs_in_another_order_compare_equal(tmp_path):
  pq.write_table(_archive(['d', 'c'], [1, 0]), tmp_path / 'part-1.parquet')
  pq.write_table(_archive(['b', 'a'], [1, 0]), tmp_path / 'part-0.parquet')
  pq.write_table(_archive(['x'], [1]), tmp_path / '.part-2.parquet.inprogress')  # not finished
  result = peer.compare(REFERENCE, peer.read_predictions(str(tmp_path)))
  assert result['identical'], result
  assert result['alerts'] == 2 and result['max_score_difference'] == 0


@pytest.mark.parametrize('other, broken', [
    (_archive(['a', 'b', 'c', 'd'], [0, 1, 1, 1]), 'predictions_differ'),
    (_archive(['a', 'b', 'c'], [0, 1, 0]), 'only_in_reference'),
    (_archive(['a', 'b', 'c', 'd', 'd'], [0, 1, 0, 1, 1]), 'duplicates'),
    (_archive(['a', 'b', 'c', 'e'], [0, 1, 0, 1]), 'only_in_reference'),
])
def test_a_flipped_missing_duplicated_or_foreign_row_is_a_difference(other, broken):
  result = peer.compare(REFERENCE, other)
  assert not result['identical']
  assert result[broken] == 1, result


def test_another_model_version_is_a_difference():
  result = peer.compare(REFERENCE, _archive(['a', 'b', 'c', 'd'], [0, 1, 0, 1], version='v2'))
  assert not result['same_model'] and not result['identical']


def test_jar_names_lose_their_versions_only():
  assert peer._artifact('kafka-clients-3.9.2.jar') == 'kafka-clients'
  assert peer._artifact('spark-sql-kafka-0-10_2.13-4.2.0.jar') == 'spark-sql-kafka-0-10_2.13'
  assert peer._artifact('zstd-jni-1.5.7-7.jar') == 'zstd-jni'


def test_overall_rate_without_the_first_output():
  run = {'samples': [(1.0, 0), (2.0, 50), (3.0, 50), (4.0, 100)], 'first_output_s': 2.0,
         'all_archived_s': 4.0, 'records_archived': 100}
  assert peer.after_first_output(run) == 25.0
  assert peer.after_first_output(dict(run, first_output_s=None)) is None


def test_java_major_version():
  assert peer.java_major('openjdk version "17.0.15" 2025-04-15') == 17
  assert peer.java_major('java version "1.8.0_392"') == 8
  assert peer.java_major('bash: java: command not found') == 0


def test_cpu_per_record_of_the_steady_window_only():
  spin = 'import time\nend = time.time() + 2.5\nwhile time.time() < end: pass'
  child = subprocess.Popen([sys.executable, '-c', spin])
  started = time.monotonic()
  sampler = common.MemorySampler({'python_job': child.pid}, every_s=0.05)
  samples, ticks = [], []
  with sampler:
    while child.poll() is None:
      time.sleep(0.05)
      # 1,000 rows a second; the child's own CPU time beside them, read here independently.
      t = time.monotonic() - started
      samples.append((t, int(t * 1000)))
      ticks.append(cpu_ticks(child.pid))
  steady = common.steady_cpu(sampler, samples, started)
  assert steady is not None
  total = samples[-1][1]
  first = next(i for i, (_, r) in enumerate(samples) if r >= 0.1 * total)
  last = max(i for i, (_, r) in enumerate(samples) if r <= 0.9 * total)
  rows = samples[last][1] - samples[first][1]
  expected = (ticks[last] - ticks[first]) / os.sysconf('SC_CLK_TCK') / rows * 1e6
  us = steady['us_per_record']
  # The sampler's own samples are up to one period off the window's ends: a margin for that.
  assert abs(us['python_job'] - expected) <= 0.2 * expected + 0.1e6 / rows, (steady, expected)
  assert us['python_job'] > 0 and us['total'] == us['python_job'] and steady['cores'] > 0
  line = common.steady_cpu_line(steady)
  assert line.startswith(f"{us['total']:.1f} us/record") and 'python_job' in line
  assert common.steady_cpu(sampler, samples[:1], started) is None


@pytest.mark.parametrize('cmd, role', [
    ('/v/bin/python -m pipelines.fork_server serve --socket /tmp/f/socket', 'sdk_worker_fork_server'),
    ('/v/bin/python -m pipelines.fork_server --id=1-2 --provision_endpoint=localhost:1',
     'sdk_worker_launcher'),
    ('/v/bin/python -m pipelines.sdk_worker --id=1-2 --provision_endpoint=localhost:1',
     'python_sdk_worker'),
    ('java -cp a.jar:beam-runners-flink-1.19-job-server-2.62.0.jar org.apache.beam.X',
     'flink_job_server_jvm'),
    ('/usr/lib/jvm/java-17/bin/java -cp /p/conf:/p/jars/* -Xmx1g org.apache.spark.deploy.SparkSubmit '
     '--conf spark.master=local[2] pyspark-shell', 'spark_jvm'),
    ('/v/bin/python -m pyspark.daemon pyspark.worker', 'spark_python_worker'),
])
def test_process_roles_tell_the_fork_server_and_its_launchers_from_the_workers(cmd, role):
  assert common.role_of(cmd) == role


def test_every_flag_the_shared_job_runner_reads_is_one_the_peer_has():
  """benchmarks.peer runs the stream job through benchmarks.throughput's run_job with its own
  flags: a flag run_job reads that only throughput defines fails the peer at its first run."""
  import ast  # pylint: disable=import-outside-toplevel
  import inspect  # pylint: disable=import-outside-toplevel
  from benchmarks import throughput  # pylint: disable=import-outside-toplevel

  read = {node.attr for node in ast.walk(ast.parse(inspect.getsource(throughput.run_job)))
          if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id == 'args'}
  defined = {node.args[0].value.lstrip('-')
             for node in ast.walk(ast.parse(inspect.getsource(peer.main)))
             if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'add_argument'
             and node.args and isinstance(node.args[0], ast.Constant)}
  assert read and read <= defined, sorted(read - defined)
