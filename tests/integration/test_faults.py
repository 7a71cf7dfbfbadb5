"""Faults survived with nothing lost: the stream job on Flink while traffic flows, through a
broker restart, a killed Python SDK worker, a cancelled and restarted job, and a lost
TaskManager.

Each scenario prints ``[accounting] <scenario>: sent, acknowledged, archived, duplicates,
lost, unexpected``: every uuid the broker acknowledged must be archived (lost = 0); repeats
(a replay after a restart writes some records again) are bounded and removable by uuid.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from harness.flink import FlinkCluster
from harness.kafka import make_topics, running_broker, topics_for
from harness.traffic import Traffic
from pipelines.runners import newest_checkpoint
from tests.helpers import require_jvm_side
from tests.integration.faults import (account, alerts_dedupe_by_event_id, archived_uuids,
                                      assert_nothing_lost, kill_sdk_worker, report_lost,
                                      running_stream_job, sdk_workers, stream_args, wait_until,
                                      wait_until_archived)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

COUNT = 3000
RATE = 100.0  # messages/s: the traffic lasts 30 s, long enough for a fault in the middle
CHECKPOINT_MS = 2000


def _checkpointing(group: str) -> list[str]:
  return [f'--checkpointing_interval={CHECKPOINT_MS}', f'--consumer_group={group}']


# Was an expected failure until the job finished its bundles before checkpoints
# (pipelines/runners.py STREAMING_FLINK_DEFAULTS; the likely fix, not proven for this case): some
# partitions' records never reached the archive after a broker restart (4 and 888 of 3,000).
# Since then: 5 of 5 runs lost nothing, 2 of them with the 2 cores also busy with three
# spinning processes.
def test_broker_restart_mid_stream_loses_nothing(synthetic_model_dir, tmp_path):
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  output = str(tmp_path / 'out')
  with running_broker(run_dir=str(tmp_path / 'kafka')) as broker:
    make_topics(broker.bootstrap, topics.values())
    args = stream_args(broker.bootstrap, topics, output, synthetic_model_dir, '[local]',
                       *_checkpointing(f'g-{suffix}'), f'--job_name=broker-restart-{suffix}')
    with Traffic(broker.bootstrap, topics, COUNT, RATE) as traffic, \
        running_stream_job(args) as job:
      traffic.start()
      wait_until(lambda: archived_uuids(output), 90, 'the first archived records')
      started = time.monotonic()
      broker.stop()
      time.sleep(5)  # clients see connection refused, retry, back off
      broker.start()
      print(f'[timing] broker down and up again in {time.monotonic() - started:.1f} s')
      stats = traffic.finish()
      wait_until_archived(output, traffic.sink.acked_uuids, 45, job)
    line = account('broker restart', stats, traffic.sink.acked_uuids, output)
    if line['lost']:
      report_lost(broker.bootstrap, topics['network'], f'g-{suffix}', output,
                  traffic.sink.acked_uuids)
  assert_nothing_lost(line, max_duplicates=COUNT // 2)


def test_sdk_worker_kill_restarts_the_job_with_the_defaults(kafka_bootstrap, synthetic_model_dir,
                                                            tmp_path):
  """``kill -9`` of one Python SDK worker on embedded Flink, with no checkpoint or restart
  flag given: the job's own defaults (pipelines/stream.py) must restart it and lose nothing.
  Before them the job ended ("Recovery is suppressed by NoRestartBackoffTimeStrategy")."""
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  output = str(tmp_path / 'out')
  args = stream_args(kafka_bootstrap, topics, output, synthetic_model_dir, '[local]',
                     f'--consumer_group=g-{suffix}', f'--job_name=worker-kill-{suffix}')
  assert not any('checkpointing_interval' in a or 'execution_retries' in a for a in args)
  with Traffic(kafka_bootstrap, topics, COUNT, RATE) as traffic, \
      running_stream_job(args) as job:
    traffic.start()
    # Early, so that records still flow to the killed worker's stages: Flink notices the
    # loss at the next bundle it sends there.
    wait_until(lambda: len(archived_uuids(output)) > COUNT // 10, 120, 'a tenth archived')
    before = set(sdk_workers())
    killed = kill_sdk_worker()
    print(f'[timing] SDK worker {killed} killed; traffic still sending: {traffic.is_alive()}',
          flush=True)

    def restarted():
      assert job.state not in ('FAILED', 'CANCELLED', 'DONE'), f'the job ended: {job.state}'
      return set(sdk_workers()) - before
    # Flink fails the tasks on the lost worker and restarts the job, with new workers.
    wait_until(restarted, 90, 'new SDK workers after the restart')
    killed_at = len(archived_uuids(output))
    stats = traffic.finish()
    wait_until_archived(output, traffic.sink.acked_uuids, 180, job)
    assert job.state == 'RUNNING', job.state
  assert killed not in sdk_workers()
  print(f'[accounting] SDK worker kill: pid {killed} killed, archived {killed_at} when the '
        f'job restarted')
  line = account('SDK worker kill', stats, traffic.sink.acked_uuids, output)
  if line['lost']:
    report_lost(kafka_bootstrap, topics['network'], f'g-{suffix}', output, traffic.sink.acked_uuids)
  # A restart replays what was read after the last checkpoint: at most what was archived by
  # the time the job restarted.
  assert_nothing_lost(line, max_duplicates=killed_at)


@pytest.fixture(scope='module')
def own_cluster(tmp_path_factory):
  """A standalone cluster of this module's own: the TaskManager-loss test kills its TM.
  Heartbeats are short so that a lost TaskManager is noticed in seconds."""
  require_jvm_side()
  cluster = FlinkCluster(str(tmp_path_factory.mktemp('own-flink')), slots=2,
                         heartbeat_interval_ms=1000, heartbeat_timeout_ms=6000).start()
  try:
    yield cluster.master, cluster.run
  finally:
    cluster.stop()


def _cluster_args(bootstrap, topics, output, model_dir, master, suffix, checkpoint_dir):
  # Explicit restarts: a failed job (lost TaskManager) is restarted from its last checkpoint.
  return stream_args(bootstrap, topics, output, model_dir, master, *_checkpointing(f'g-{suffix}'),
                     f'--checkpoint_dir={checkpoint_dir}', '--number_of_execution_retries=20',
                     '--execution_retry_delay=2000', f'--job_name=faults-{suffix}')


@pytest.mark.long  # a cluster of its own; the SDK worker kill restores a checkpoint in CI
def test_job_cancel_and_restart_resumes_from_checkpoint(kafka_bootstrap, own_cluster,
                                                        synthetic_model_dir, tmp_path):
  master, _ = own_cluster
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  output = str(tmp_path / 'out')
  checkpoint_dir = str(tmp_path / 'checkpoints')
  args = _cluster_args(kafka_bootstrap, topics, output, synthetic_model_dir, master, suffix,
                       checkpoint_dir)
  with Traffic(kafka_bootstrap, topics, COUNT, RATE) as traffic:
    with running_stream_job(args):
      traffic.start()
      wait_until(lambda: len(archived_uuids(output)) > COUNT // 4, 120, 'a quarter archived')
    first_run = len(archived_uuids(output))
    resumed_from = newest_checkpoint(checkpoint_dir)
    assert resumed_from, 'the cancelled job left a retained checkpoint'
    with running_stream_job(args) as job:
      stats = traffic.finish()
      wait_until_archived(output, traffic.sink.acked_uuids, 150, job)
  print(f'[accounting] job restart: first run archived {first_run}, second resumed from '
        f'{os.path.basename(resumed_from)}')
  line = account('job restart', stats, traffic.sink.acked_uuids, output)
  if line['lost']:
    report_lost(kafka_bootstrap, topics['network'], f'g-{suffix}', output, traffic.sink.acked_uuids)
  # A replay rewrites at most what the cancelled run had archived (those read after its last
  # checkpoint); how many depends on checkpoint timing on a busy machine.
  assert_nothing_lost(line, max_duplicates=first_run)
  alerts_dedupe_by_event_id(output)


@pytest.mark.long  # a cluster of its own; the broker restart and SDK worker kill run in CI
def test_taskmanager_loss_restarts_the_job(kafka_bootstrap, own_cluster, synthetic_model_dir,
                                           tmp_path):
  master, cluster = own_cluster
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  output = str(tmp_path / 'out')
  args = _cluster_args(kafka_bootstrap, topics, output, synthetic_model_dir, master, suffix,
                       str(tmp_path / 'checkpoints'))
  with Traffic(kafka_bootstrap, topics, COUNT, RATE) as traffic, \
      running_stream_job(args) as job:
    traffic.start()
    wait_until(lambda: len(archived_uuids(output)) > COUNT // 4, 120, 'a quarter archived')
    cluster('kill-taskmanager')
    killed_at = len(archived_uuids(output))
    time.sleep(3)
    cluster('start-taskmanager')
    stats = traffic.finish()
    wait_until_archived(output, traffic.sink.acked_uuids, 180, job)
  print(f'[accounting] TaskManager loss: archived {killed_at} when the TaskManager was killed')
  line = account('TaskManager loss', stats, traffic.sink.acked_uuids, output)
  if line['lost']:
    report_lost(kafka_bootstrap, topics['network'], f'g-{suffix}', output, traffic.sink.acked_uuids)
  assert_nothing_lost(line, max_duplicates=killed_at)
