"""The stream job on a standalone Flink cluster run the way a platform team runs one: Python SDK
workers from a worker pool beside the TaskManager (EXTERNAL environment, the job's package
staged with --setup_file), checkpoints and a savepoint on object storage (MinIO through Flink's
S3 plugin), stop-with-savepoint and resume, and Flink's Prometheus reporter.

The cluster and its worker pool are started from a working directory of their own, not the
submitter's: nothing relies on a shared path or on the submitter's current directory.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages
from harness.flink import FlinkCluster
from harness.kafka import make_topics, topics_for
from harness.procs import cmdline
from harness.traffic import Traffic
from pipelines.runners import newest_checkpoint
from tests.helpers import read_output, require_jvm_side
from tests.integration.faults import (account, archived_uuids, assert_nothing_lost,
                                      running_stream_job, stream_args, wait_until,
                                      wait_until_archived)

pytestmark = [
    pytest.mark.integration,
    # Long: a cluster, a worker pool and MinIO of its own; CI runs the cluster in
    # test_kafka_flink.py.
    pytest.mark.long,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_MESSAGES = 400
MALFORMED = 0.05


@pytest.fixture(scope='module')
def cluster(tmp_path_factory, s3_server):
  """A session cluster with a worker pool beside its TaskManager, whose S3 plugin reaches the
  MinIO of ``s3_server``; started from a folder of its own."""
  require_jvm_side()
  elsewhere = str(tmp_path_factory.mktemp('taskmanager-host'))
  flink = FlinkCluster(str(tmp_path_factory.mktemp('flink')), slots=2,
                       heartbeat_interval_ms=None, heartbeat_timeout_ms=None,
                       worker_pool=True, s3=s3_server, cwd=elsewhere).start()
  try:
    yield flink
  finally:
    flink.stop()


def _external(cluster: FlinkCluster) -> list[str]:
  return ['--environment_type=EXTERNAL',
          f'--environment_config=localhost:{cluster.worker_pool_port}']


def _pool_workers(cluster: FlinkCluster) -> list[int]:
  """The SDK worker processes the pool started (its children: sdk_worker.sh execs Python)."""
  with open(os.path.join(cluster.run_dir, 'worker_pool', 'worker_pool.pid'), encoding='utf-8') as f:
    pool = int(f.read().strip())
  return [int(pid) for pid in filter(str.isdigit, os.listdir('/proc'))
          if _parent(int(pid)) == pool and 'pipelines.sdk_worker' in cmdline(int(pid))]


def _parent(pid: int) -> int:
  try:
    with open(f'/proc/{pid}/stat', encoding='utf-8') as f:
      return int(f.read().rsplit(')', 1)[1].split()[1])
  except (OSError, ValueError, IndexError):
    return 0


def _prometheus(port: int) -> str:
  """One metrics page; '' when the endpoint dropped the request (seen in CI while the job's
  tasks were being deployed: "Remote end closed connection"), which the callers poll again."""
  try:
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5) as r:
      return r.read().decode()
  except (OSError, http.client.HTTPException):
    return ''


def _beam_counter(text: str, name: str) -> float:
  """The sum over operators and subtasks of one Beam counter on a Prometheus page."""
  pattern = re.compile(rf'^flink_taskmanager_job_task_operator_\w*{name}\{{[^}}]*\}} (\S+)$', re.M)
  return sum(float(v) for v in pattern.findall(text))


def _backlogs(text: str, job_name: str) -> list[float]:
  """KafkaIO's per-split backlog gauges (the consumer lag) of one job on a Prometheus page, where
  the reporter writes the job's name with each character other than [A-Za-z0-9_] as '_'."""
  label = re.sub(r'\W', '_', job_name)
  pattern = re.compile(r'^flink_taskmanager_job_task_operator_source_splits_\w+_backlog_elements'
                       rf'\{{[^}}]*job_name="{label}"[^}}]*\}} (\S+)$', re.M)
  return [float(v) for v in pattern.findall(text)]


def test_stopped_run_on_the_worker_pool_prints_real_counts(
    cluster, kafka_bootstrap, synthetic_model_dir, tmp_path):
  """``python -m pipelines.stream`` on the worker pool, with the project staged by
  --setup_file, stopped with SIGTERM once its outputs are complete: the summary it prints has
  the counts the outputs hold (a stopped job reports none through Beam: they come from Flink's
  REST API), and the TaskManager's Prometheus endpoint showed Beam's counters while it ran, and
  the consumer lag (KafkaIO's backlog per split) down to 0 once everything was read."""
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  sink = KafkaSink(kafka_bootstrap)
  config = SourceConfig(streams=('network',), count=N_MESSAGES, seed=5, topics=topics,
                        malformed_fraction=MALFORMED, start_ms=int((time.time() - 600) * 1000))
  for message in generate_messages(config):
    sink.send(message)
  sink.close()
  assert sink.stats()['acknowledged'] == N_MESSAGES

  output = str(tmp_path / 'out')
  job_name = f'platform-summary-{suffix}'
  args = stream_args(kafka_bootstrap, topics, output, synthetic_model_dir, cluster.master,
                     *_external(cluster), f'--setup_file={ROOT}/setup.py',
                     f'--job_name={job_name}')
  log_path = tmp_path / 'stream.log'
  with open(log_path, 'wb') as log:
    job = subprocess.Popen([sys.executable, '-m', 'pipelines.stream', *args], cwd=ROOT,
                           stdout=log, stderr=subprocess.STDOUT)
  seen = {'prometheus': 0.0, 'workers': [], 'lag': []}

  def complete() -> bool:
    assert job.poll() is None, log_path.read_text()[-3000:]
    seen['workers'] = seen['workers'] or _pool_workers(cluster)
    # Either port may be the TaskManager's: each JVM takes the first free one of the list.
    pages = ''.join(_prometheus(port) for port in cluster.metrics_ports)
    seen['prometheus'] = max(seen['prometheus'],
                             _beam_counter(pages, 'ParseAndClean_network_messages'))
    written = len(read_output(output, 'archive/network')) + len(read_output(output, 'dead_letter'))
    return written == N_MESSAGES and seen['prometheus'] == N_MESSAGES

  def caught_up() -> bool:
    pages = ''.join(_prometheus(port) for port in cluster.metrics_ports)
    seen['lag'] = _backlogs(pages, job_name) or seen['lag']
    return bool(seen['lag']) and sum(seen['lag']) == 0

  try:
    wait_until(complete, 300, 'every message archived or dead-lettered, and counted', 2)
    # The backlog gauges are set afresh at most once a second, from offsets KafkaIO fetches
    # every few seconds.
    for _ in range(30):
      if caught_up():
        break
      time.sleep(2)
    assert seen['lag'] and sum(seen['lag']) == 0, f'consumer lag after reading everything: {seen}'
    # The summary reads Flink's REST API every 3 s, whose metrics are at most 2 s old.
    time.sleep(8)
    # The workers were the pool's, running from the cluster's folder, over the staged package.
    assert seen['workers'], 'no SDK worker started by the worker pool'
    worker = seen['workers'][0]
    assert os.readlink(f'/proc/{worker}/cwd') == cluster.cwd
    with open(f'/proc/{worker}/environ', 'rb') as f:
      environ = dict(v.split(b'=', 1) for v in f.read().split(b'\0') if b'=' in v)
    assert b'/staged-' in environ.get(b'PYTHONPATH', b'')
  finally:
    job.send_signal(signal.SIGTERM)
    code = job.wait(120)
  summary = log_path.read_text()
  summary = summary[summary.rfind('Run summary'):]
  print(summary)
  assert code == 0, summary
  archived = read_output(output, 'archive/network')
  dead = read_output(output, 'dead_letter')
  line = re.search(r'^\s+network\s+(\d+)\s+(\d+)\s+(\d+)$', summary, re.M)
  assert line, summary
  assert tuple(map(int, line.groups())) == (N_MESSAGES, len(archived), len(dead))
  assert dead and archived
  rows = re.search(r'archive/network/\s+(\d+) rows', summary)
  assert rows and int(rows.group(1)) == len(archived), summary
  # One gauge per split of the topic's partitions, and the summary's lag from Flink's REST API.
  assert len(seen['lag']) >= 1 and min(seen['lag']) >= 0, seen['lag']
  assert re.search(r'^\s+consumer lag: 0 records', summary, re.M), summary


def test_stop_with_savepoint_on_s3_and_resume_loses_nothing(
    cluster, kafka_bootstrap, s3_server, synthetic_model_dir, tmp_path):
  """Checkpoints on S3 while traffic flows, stop-with-savepoint into the same bucket, traffic
  sent while no job runs, then a new job resumed from the savepoint: every acknowledged record
  archived, repeats bounded (removable by uuid)."""
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  bucket = s3_server.make_bucket(f'checkpoints-{suffix}')
  checkpoint_dir = f's3://{bucket}/stream'
  output = str(tmp_path / 'out')
  args = stream_args(kafka_bootstrap, topics, output, synthetic_model_dir, cluster.master,
                     *_external(cluster), *s3_server.flags(), '--checkpointing_interval=2000',
                     f'--consumer_group=g-{suffix}', f'--checkpoint_dir={checkpoint_dir}',
                     '--stop_with_savepoint', f'--job_name=platform-savepoint-{suffix}')
  # 60 s of traffic: it goes on while the first job stops and until the second one runs.
  count = 1500
  with Traffic(kafka_bootstrap, topics, count, rate=25.0) as traffic:
    with running_stream_job(args) as job:
      traffic.start()
      wait_until(lambda: len(archived_uuids(output)) > 50, 180, 'the first archived records')
      keys = [o['Key'] for o in s3_server.client().list_objects_v2(
          Bucket=bucket, Prefix='stream/').get('Contents', [])]
      assert any('/chk-' in k and k.endswith('_metadata') for k in keys), keys
    # Left the block: stopped with a savepoint (--stop_with_savepoint), while traffic goes on.
    savepoint = newest_checkpoint(checkpoint_dir)
    assert savepoint and '/savepoints/savepoint-' in savepoint, savepoint
    before = len(archived_uuids(output))
    time.sleep(3)
    with running_stream_job(args) as job:
      stats = traffic.finish()
      wait_until_archived(output, traffic.sink.acked_uuids, 180, job)
  line = account('stop with savepoint on S3, resume', stats, traffic.sink.acked_uuids, output)
  print(f'[accounting] archived before the savepoint: {before}; savepoint {savepoint}')
  assert_nothing_lost(line, max_duplicates=count // 2)
