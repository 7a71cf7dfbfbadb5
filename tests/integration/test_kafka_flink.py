"""End to end on the real JVM side: Kafka broker -> ReadKafkaMessages -> Python Map ->
PublishToKafka -> Kafka, on the FlinkRunner, with no Docker.

* ``test_roundtrip_on_embedded_flink``: ``--flink_master=[local]`` (a Flink MiniCluster inside the
  job server JVM).
* ``test_roundtrip_on_standalone_cluster``: a real session cluster from scripts/flink_cluster.sh
  (JobManager + TaskManager JVMs), ``--flink_master=localhost:<port>``.

The pipeline is a real unbounded streaming read (no ``max_num_records``): each test waits until
all N messages came out on the output topic, then cancels the job (Beam cancel + Flink REST cancel
on the cluster, see ``kafka_io.cancel_flink_job``). The broker and the cluster are started on free
ports in a temporary run dir by session fixtures and stopped afterwards.

Needs java and the jars of scripts/fetch_jars.sh; skipped (with the reason) when they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

import apache_beam as beam
import pytest

pytestmark = [
    pytest.mark.integration,
    # When the job is cancelled and its job server stopped, the LOOPBACK SDK harness threads of
    # this process see their gRPC streams closed ("UNAVAILABLE: Stream removed"): shutdown noise.
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_MESSAGES = 300
PARTITIONS = 4
BASE_TS_MS = 1_700_000_000_000  # event time of message 0; message i is BASE_TS_MS + 1000 * i
OUTPUT_TIMEOUT_S = 180


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _require_jvm_side():
  if shutil.which('java') is None:
    pytest.skip('java is not installed')
  from transforms import kafka_io  # pylint: disable=import-outside-toplevel
  try:
    kafka_io.flink_job_server_jar()
    kafka_io.io_expansion_service_jar()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  for probe in ('kafka/lib/kafka_2.13-3.9.2.jar', 'flink/lib/flink-runtime-1.19.3.jar'):
    if not os.path.isfile(os.path.join(kafka_io.jars_dir(), probe)):
      pytest.skip(f'{probe} missing: run scripts/fetch_jars.sh')


def _script(name, action, env, timeout):
  t0 = time.monotonic()
  proc = subprocess.run([os.path.join(ROOT, 'scripts', name), action], env=env, timeout=timeout,
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'scripts/{name} {action} failed ({proc.returncode}):\n'
                       f'{proc.stdout}\n{proc.stderr}')
  print(f'[timing] scripts/{name} {action}: {time.monotonic() - t0:.1f} s', flush=True)
  return proc.stdout


@pytest.fixture(scope='session')
def kafka_bootstrap(tmp_path_factory):
  """A KRaft broker (scripts/kafka.sh) on a free port; yields its bootstrap address."""
  _require_jvm_side()
  port = _free_port()
  env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(_free_port()),
             KAFKA_RUN_DIR=str(tmp_path_factory.mktemp('kafka')), KAFKA_PARTITIONS=str(PARTITIONS))
  _script('kafka.sh', 'start', env, timeout=120)
  try:
    yield f'127.0.0.1:{port}'
  finally:
    _script('kafka.sh', 'stop', env, timeout=60)


@pytest.fixture(scope='session')
def flink_rest(tmp_path_factory):
  """A standalone session cluster (scripts/flink_cluster.sh) on free ports; yields host:port."""
  _require_jvm_side()
  port = _free_port()
  env = dict(os.environ, FLINK_REST_PORT=str(port), FLINK_RPC_PORT=str(_free_port()),
             FLINK_RUN_DIR=str(tmp_path_factory.mktemp('flink')), FLINK_TM_SLOTS='2')
  _script('flink_cluster.sh', 'start', env, timeout=150)
  try:
    yield f'localhost:{port}'
  finally:
    _script('flink_cluster.sh', 'stop', env, timeout=90)


# ----------------------------------------------------------------------------------------------


def enrich(message, timestamp=beam.DoFn.TimestampParam):
  """The transform under test: parse the JSON, derive a field, keep the Kafka metadata."""
  record = json.loads(message.value)
  out = {
      'id': record['id'],
      'doubled': record['value'] * 2,
      'name': record['name'].upper(),
      'stream': message.stream,
      'source': message.source,
      'partition': message.partition,
      'offset': message.offset,
      'kafka_ts_ms': message.timestamp_ms,
      'element_ts_ms': int(timestamp.micros // 1000),
  }
  return message.key, json.dumps(out, sort_keys=True).encode('utf-8')


def _make_topics(bootstrap, *topics):
  from confluent_kafka.admin import AdminClient, NewTopic  # pylint: disable=import-outside-toplevel
  admin = AdminClient({'bootstrap.servers': bootstrap})
  futures = admin.create_topics([NewTopic(t, num_partitions=PARTITIONS, replication_factor=1)
                                 for t in topics])
  for f in futures.values():
    f.result(timeout=30)


def _produce(bootstrap, topic, n):
  from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel
  producer = Producer({'bootstrap.servers': bootstrap, 'linger.ms': 5})
  for i in range(n):
    value = json.dumps({'id': i, 'value': i + 0.5, 'name': f'rec-{i}'}).encode()
    producer.produce(topic, key=f'k{i}'.encode(), value=value, timestamp=BASE_TS_MS + 1000 * i)
  assert producer.flush(30) == 0


def _consume(bootstrap, topic, n, timeout_s, result=None):
  """Reads the output topic until n distinct ids arrived, the job ``result`` ended, or timeout.

  Returns ({id: (key, dict)}, monotonic time of the first output or None)."""
  from apache_beam.runners.runner import PipelineState  # pylint: disable=import-outside-toplevel
  from confluent_kafka import Consumer  # pylint: disable=import-outside-toplevel
  consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'check-{uuid.uuid4().hex}',
                       'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
  consumer.subscribe([topic])
  seen, first_at = {}, None
  deadline = time.monotonic() + timeout_s
  try:
    while len(seen) < n and time.monotonic() < deadline:
      if result is not None and PipelineState.is_terminal(result.state):
        raise AssertionError(f'the job ended in state {result.state} after {len(seen)} outputs')
      msg = consumer.poll(0.5)
      if msg is None or msg.error():
        continue
      if first_at is None:
        first_at = time.monotonic()
      record = json.loads(msg.value())
      seen[record['id']] = (msg.key(), record)
  finally:
    consumer.close()
  return seen, first_at


def _roundtrip(bootstrap, flink_master, label):
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  from transforms import kafka_io  # pylint: disable=import-outside-toplevel

  suffix = uuid.uuid4().hex[:8]
  in_topic, out_topic = f'it_in_{label}_{suffix}', f'it_out_{label}_{suffix}'
  _make_topics(bootstrap, in_topic, out_topic)
  _produce(bootstrap, in_topic, N_MESSAGES)

  t0 = time.monotonic()
  args = kafka_io.flink_pipeline_options(flink_master, parallelism=1) + [
      f'--job_name=it-{label}-{suffix}']
  with kafka_io.flink_job_server(args) as run_args:
    t_job_server = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(run_args))
    # One expansion service JVM for both Kafka transforms.
    with kafka_io.expansion_service():
      _ = (
          pipeline
          | kafka_io.ReadKafkaMessages(bootstrap, {in_topic: 'network'}, group_id=f'it-{suffix}')
          | beam.Map(enrich)
          | kafka_io.PublishToKafka(bootstrap, out_topic))
    t_built = time.monotonic()
    result = pipeline.run()
    t_submitted = time.monotonic()
    try:
      seen, first_at = _consume(bootstrap, out_topic, N_MESSAGES, OUTPUT_TIMEOUT_S, result)
      t_done = time.monotonic()
    finally:
      kafka_io.cancel_flink_job(result, flink_master)
    t_cancelled = time.monotonic()
  t_end = time.monotonic()
  print(f'[timing] {label}: job server {t_job_server - t0:.1f} s, expansion '
        f'{t_built - t_job_server:.1f} s, submit {t_submitted - t_built:.1f} s, first output '
        f'{(first_at or t_done) - t_submitted:.1f} s after submit, all {len(seen)} outputs '
        f'{t_done - t_submitted:.1f} s after submit, cancel {t_cancelled - t_done:.1f} s, '
        f'job server stop {t_end - t_cancelled:.1f} s, total {t_end - t0:.1f} s', flush=True)

  assert sorted(seen) == list(range(N_MESSAGES)), (
      f'{len(seen)} of {N_MESSAGES} outputs arrived; missing e.g. '
      f'{sorted(set(range(N_MESSAGES)) - set(seen))[:10]}')
  partitions = set()
  for i, (key, record) in seen.items():
    assert key == f'k{i}'.encode()
    assert record['doubled'] == (i + 0.5) * 2
    assert record['name'] == f'REC-{i}'
    assert record['stream'] == 'network'
    assert record['source'] == in_topic
    assert 0 <= record['partition'] < PARTITIONS and record['offset'] >= 0
    assert record['kafka_ts_ms'] == BASE_TS_MS + 1000 * i
    assert record['element_ts_ms'] == BASE_TS_MS + 1000 * i  # event time = Kafka record time
    partitions.add(record['partition'])
  assert len(partitions) > 1  # the read covered several partitions


def test_roundtrip_on_embedded_flink(kafka_bootstrap):
  _roundtrip(kafka_bootstrap, '[local]', 'local')


def test_roundtrip_on_standalone_cluster(kafka_bootstrap, flink_rest):
  _roundtrip(kafka_bootstrap, flink_rest, 'cluster')

  # The job was cancelled on the cluster too, and the cluster is still healthy.
  import urllib.request  # pylint: disable=import-outside-toplevel
  with urllib.request.urlopen(f'http://{flink_rest}/overview', timeout=5) as r:
    overview = json.load(r)
  assert overview['jobs-running'] == 0
  assert overview['taskmanagers'] == 1
