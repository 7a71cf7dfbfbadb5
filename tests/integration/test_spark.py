"""The jobs on Beam's portable SparkRunner (the pinned Spark 3 job server, Spark embedded as
``local[2]`` in its JVM, the Python SDK workers as local processes): the same code and the same
results as on the DirectRunner, only ``--runner`` differs.

* the retrain trains and publishes the same model (same method, equal metrics);
* the detection graph, bounded (``--source=files``), writes the same archive, attacks, alerts
  and dead letters, row for row;
* the retrain on a real standalone cluster (scripts/spark_cluster.sh: a Master and a Worker
  JVM on 127.0.0.1), ``--spark_master_url=spark://...``: the same model again, and the Master
  saw the application finish.

The DirectRunner's training runs once for the module; both Spark retrains are checked against it.
CI runs the bounded detection graph; both retrains are long tests (``./run_tests.sh --full``):
the embedded one differs from the cluster's only in ``--spark_master_url``.
"""

from __future__ import annotations

import datetime
import os
import time

import pyarrow.parquet as pq
import pytest

from generator.sinks import JsonLinesSink
from generator.source import SourceConfig, generate_messages
from generator.synthetic_network import generate_network
from harness.spark import SparkCluster, missing_spark
from model import dataset, registry
from pipelines import retrain, stream as stream_job
from tests.helpers import read_output

pytestmark = pytest.mark.integration
START = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)
# Columns a run writes about itself rather than about the data (the attacks carry each side's
# processing_time too, as Process_processing_time and Memory_processing_time).
RUN_COLUMNS = ('processing_time', 'failed_at')


@pytest.fixture(scope='module')
def spark_ready():
  reason = missing_spark()
  if reason:
    pytest.skip(reason)


@pytest.fixture(scope='module')
def archive(tmp_path_factory) -> str:
  """A network archive of 6,000 records in two files, plus 200 of them replayed."""
  root = tmp_path_factory.mktemp('archive')
  folder = root / 'archive' / 'network' / 'dt=2026-03-01'
  folder.mkdir(parents=True)
  table = dataset.archive_table('network', generate_network(6000, seed=31), start=START)
  pq.write_table(table.slice(0, 3000), folder / 'a.parquet')
  pq.write_table(table.slice(3000), folder / 'b.parquet')
  pq.write_table(table.slice(0, 200), folder / 'replay.parquet')
  return str(root)


def retrain_args(archive_root: str) -> list[str]:
  return ['--detector', 'network', '--input', archive_root, '--grid', 'small', '--folds', '2']


@pytest.fixture(scope='module')
def direct_training(archive, tmp_path_factory):
  return retrain.run(retrain_args(archive) + [
      '--model_dir', str(tmp_path_factory.mktemp('direct-models'))])


@pytest.fixture(scope='module')
def spark_cluster(spark_ready, tmp_path_factory):
  cluster = SparkCluster(str(tmp_path_factory.mktemp('spark')), cores=2, memory='2g').start()
  try:
    yield cluster
  finally:
    cluster.stop()


def assert_same_training(on_spark, direct) -> None:
  for outcome in (on_spark, direct):
    assert outcome.result.stats['duplicates'] == 200
    assert outcome.decision.publish
  assert on_spark.result.stats == direct.result.stats
  assert on_spark.result.chosen == direct.result.chosen
  assert on_spark.result.cv_tasks == direct.result.cv_tasks > 0
  for method, final in direct.result.finals.items():
    assert on_spark.result.finals[method].params == final.params
    numbers, others = flatten(final.metrics)
    spark_numbers, spark_others = flatten(on_spark.result.finals[method].metrics)
    assert spark_others == others
    assert spark_numbers == pytest.approx(numbers)


def flatten(value, path: str = '') -> tuple[dict[str, float], dict[str, object]]:
  """The numbers and the other leaves of nested metrics (dicts, lists), by path."""
  numbers: dict[str, float] = {}
  others: dict[str, object] = {}
  items = (value.items() if isinstance(value, dict) else
           enumerate(value) if isinstance(value, (list, tuple)) else None)
  if items is None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      numbers[path] = value
    else:
      others[path] = value
    return numbers, others
  for key, item in items:
    n, o = flatten(item, f'{path}/{key}')
    numbers.update(n)
    others.update(o)
  return numbers, others


@pytest.mark.long  # ~4-10 min on 2 shared cores; only --spark_master_url differs from the next
def test_spark_and_direct_runner_train_the_same_model(spark_ready, archive, direct_training,
                                                      tmp_path):
  on_spark = retrain.run(retrain_args(archive) + ['--model_dir', str(tmp_path / 'spark'),
                                                  '--runner=SparkRunner'])
  assert_same_training(on_spark, direct_training)
  loaded = registry.load(str(tmp_path / 'spark'), 'network')
  assert os.path.exists(os.path.join(str(tmp_path / 'spark'), 'network', loaded.version,
                                     'report.html'))


@pytest.mark.long  # a Spark cluster of its own; CI runs the detection graph on Spark
def test_retrain_on_the_standalone_cluster_trains_the_same_model(spark_cluster, archive,
                                                                 direct_training, tmp_path):
  assert spark_cluster.state().get('aliveworkers') == 1
  on_spark = retrain.run(retrain_args(archive) + [
      '--model_dir', str(tmp_path / 'spark'), '--runner=SparkRunner',
      f'--spark_master_url={spark_cluster.master_url}'])
  assert_same_training(on_spark, direct_training)
  finished = [app for app in spark_cluster.completed_apps() if app['name'].startswith('BeamApp')]
  assert len(finished) == 1 and finished[0]['state'] == 'FINISHED', finished


def comparable(rows: list[dict]) -> list[tuple]:
  """Rows without the columns a run stamps itself, in a stable order."""
  return sorted(tuple(sorted((k, repr(v)) for k, v in row.items() if not k.endswith(RUN_COLUMNS)))
                for row in rows)


def test_bounded_detection_graph_on_spark_matches_the_direct_runner(
    spark_ready, synthetic_model_dir, tmp_path):
  inputs = tmp_path / 'in'
  sink = JsonLinesSink(inputs)
  # Event times a few minutes back, as a stream's would be.
  start_ms = int((time.time() - 600) * 1000)
  configs = [
      SourceConfig(streams=('network',), count=300, seed=5, malformed_fraction=0.03,
                   event_rate=200.0, start_ms=start_ms),
      SourceConfig(streams=('process', 'memory'), duration_s=30, seed=5, machines=4,
                   attack_fraction=0.2, malformed_fraction=0.03, start_ms=start_ms),
  ]
  for config in configs:
    for message in generate_messages(config):
      sink.send(message)
  sink.close()
  outputs = {}
  for runner in ('DirectRunner', 'SparkRunner'):
    output = str(tmp_path / runner)
    started = time.monotonic()
    stream_job.run([f'--runner={runner}', '--source=files', f'--input_dir={inputs}',
                    f'--output={output}', f'--model_dir={synthetic_model_dir}',
                    '--max_event_age_s=0'])
    print(f'[timing] the bounded job on the {runner}: {time.monotonic() - started:.0f} s')
    outputs[runner] = output
  for folder in ('archive/network', 'archive/process', 'archive/memory', 'attacks', 'alerts',
                 'incidents', 'dead_letter'):
    direct = read_output(outputs['DirectRunner'], folder)
    on_spark = read_output(outputs['SparkRunner'], folder)
    assert direct or folder in ('alerts', 'incidents'), f'the DirectRunner wrote no {folder}'
    assert comparable(on_spark) == comparable(direct), folder
  assert read_output(outputs['DirectRunner'], 'attacks'), 'no attack joined: the test is void'
  assert read_output(outputs['DirectRunner'], 'dead_letter'), 'no dead letter: the test is void'
