"""The retrain job on the FlinkRunner (the pinned Beam Flink job server, an embedded Flink
MiniCluster, the Python harness in this process): the same code and the same result as on the
DirectRunner, only ``--runner`` differs."""

from __future__ import annotations

import datetime
import os
import shutil

import pyarrow.parquet as pq
import pytest

from generator.synthetic_network import generate_network
from model import dataset, registry
from pipelines import retrain

pytestmark = pytest.mark.integration
START = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope='module')
def flink_ready():
  if shutil.which('java') is None:
    pytest.skip('java is not installed')
  from transforms import jvm  # pylint: disable=import-outside-toplevel
  try:
    jvm.flink_job_server_jar()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_flink_and_direct_runner_train_the_same_model(flink_ready, tmp_path):
  folder = tmp_path / 'archive' / 'network' / 'dt=2026-03-01'
  folder.mkdir(parents=True)
  table = dataset.archive_table('network', generate_network(6000, seed=31), start=START)
  pq.write_table(table.slice(0, 3000), folder / 'a.parquet')
  pq.write_table(table.slice(3000), folder / 'b.parquet')
  pq.write_table(table.slice(0, 200), folder / 'replay.parquet')
  args = ['--detector', 'network', '--input', str(tmp_path), '--grid', 'small', '--folds', '2']
  on_flink = retrain.run(args + ['--model_dir', str(tmp_path / 'flink'),
                                 '--runner=FlinkRunner'])
  direct = retrain.run(args + ['--model_dir', str(tmp_path / 'direct')])
  for outcome in (on_flink, direct):
    assert outcome.result.stats['duplicates'] == 200
    assert outcome.decision.publish
  assert on_flink.result.chosen == direct.result.chosen
  assert on_flink.result.cv_tasks == direct.result.cv_tasks > 0
  flink_metrics = on_flink.result.finals[on_flink.result.chosen].metrics
  direct_metrics = direct.result.finals[direct.result.chosen].metrics
  assert flink_metrics['roc_auc'] == pytest.approx(direct_metrics['roc_auc'])
  loaded = registry.load(str(tmp_path / 'flink'), 'network')
  assert os.path.exists(os.path.join(str(tmp_path / 'flink'), 'network', loaded.version,
                                     'report.html'))
