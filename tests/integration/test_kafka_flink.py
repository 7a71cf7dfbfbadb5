"""End to end on the real JVM side: Kafka broker -> ReadKafkaMessages -> Python Map ->
PublishToKafka -> Kafka, on the FlinkRunner, with no Docker; PublishToKafka with each of its
producers (KafkaIO's Java writer on the embedded Flink, librdkafka on the cluster).

* ``test_roundtrip_on_embedded_flink``: ``--flink_master=[local]`` (a Flink MiniCluster inside the
  job server JVM).
* ``test_roundtrip_on_standalone_cluster``: a real session cluster from scripts/flink_cluster.sh
  (JobManager + TaskManager JVMs), ``--flink_master=localhost:<port>``.

On the cluster the pipeline is a real unbounded streaming read (no ``max_num_records``); on the
embedded Flink the bounded one (``max_num_records``, the other Java path of ReadKafkaBatches).
Each test waits until all N messages came out on the output topic, then cancels the job (Beam
cancel + Flink REST cancel on the cluster, see ``runners.cancel_flink_job``). Every fifth
message has no key and one is a tombstone (no value): hostile producers send both, and either
must reach Python as a message, not fail a coder and restart the job. The broker and the cluster are started on free
ports in a temporary run dir by session fixtures and stopped afterwards.

Needs java and the jars of scripts/fetch_jars.sh; skipped (with the reason) when they are missing.
"""

from __future__ import annotations

import json
import time
import uuid

import apache_beam as beam
import pytest

from harness.kafka import PARTITIONS, make_topics

pytestmark = [
    pytest.mark.integration,
    # When the job is cancelled and its job server stopped, the LOOPBACK SDK harness threads of
    # this process see their gRPC streams closed ("UNAVAILABLE: Stream removed"): shutdown noise.
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

N_MESSAGES = 300
BASE_TS_MS = 1_700_000_000_000  # event time of message 0; message i is BASE_TS_MS + 1000 * i
OUTPUT_TIMEOUT_S = 180
TOMBSTONE_ID = -1


# ----------------------------------------------------------------------------------------------


def enrich(message, timestamp=beam.DoFn.TimestampParam):
  """The transform under test: parse the JSON, derive a field, keep the Kafka metadata."""
  if not message.value:  # the tombstone (ReadKafkaBatches gives it an empty value)
    return message.key, json.dumps({'id': TOMBSTONE_ID}).encode('utf-8')
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


def _produce(bootstrap, topic, n):
  from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel
  producer = Producer({'bootstrap.servers': bootstrap, 'linger.ms': 5})
  for i in range(n):
    value = json.dumps({'id': i, 'value': i + 0.5, 'name': f'rec-{i}'}).encode()
    producer.produce(topic, key=_key(i), value=value, timestamp=BASE_TS_MS + 1000 * i)
  producer.produce(topic, key=b'tombstone', value=None, timestamp=BASE_TS_MS)
  assert producer.flush(30) == 0


def _key(i):
  return None if i % 5 == 0 else f'k{i}'.encode()


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
      if (result is not None and PipelineState.is_terminal(result.state)
          and result.state != PipelineState.DONE):  # a bounded read may end before we read
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


def _roundtrip(bootstrap, flink_master, label, max_num_records=None, producer='python'):
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  from pipelines import runners  # pylint: disable=import-outside-toplevel
  from transforms import kafka_io  # pylint: disable=import-outside-toplevel

  suffix = uuid.uuid4().hex[:8]
  in_topic, out_topic = f'it_in_{label}_{suffix}', f'it_out_{label}_{suffix}'
  make_topics(bootstrap, [in_topic, out_topic])
  _produce(bootstrap, in_topic, N_MESSAGES)

  t0 = time.monotonic()
  args = runners.flink_pipeline_options(flink_master, parallelism=1) + [
      f'--job_name=it-{label}-{suffix}']
  with runners.flink_job_server(args) as run_args:
    t_job_server = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(run_args))
    # One expansion service JVM for both Kafka transforms.
    with kafka_io.expansion_service():
      _ = (
          pipeline
          | kafka_io.ReadKafkaMessages(bootstrap, {in_topic: 'network'}, group_id=f'it-{suffix}',
                                       max_num_records=max_num_records)
          | beam.Map(enrich)
          | kafka_io.PublishToKafka(bootstrap, out_topic, producer=producer))
    t_built = time.monotonic()
    result = pipeline.run()
    t_submitted = time.monotonic()
    try:
      seen, first_at = _consume(bootstrap, out_topic, N_MESSAGES + 1, OUTPUT_TIMEOUT_S, result)
      t_done = time.monotonic()
    finally:
      runners.cancel_flink_job(result, flink_master)
    t_cancelled = time.monotonic()
  t_end = time.monotonic()
  print(f'[timing] {label}: job server {t_job_server - t0:.1f} s, expansion '
        f'{t_built - t_job_server:.1f} s, submit {t_submitted - t_built:.1f} s, first output '
        f'{(first_at or t_done) - t_submitted:.1f} s after submit, all {len(seen)} outputs '
        f'{t_done - t_submitted:.1f} s after submit, cancel {t_cancelled - t_done:.1f} s, '
        f'job server stop {t_end - t_cancelled:.1f} s, total {t_end - t0:.1f} s', flush=True)

  expected = [TOMBSTONE_ID, *range(N_MESSAGES)]
  assert sorted(seen) == expected, (
      f'{len(seen)} of {len(expected)} outputs arrived; missing e.g. '
      f'{sorted(set(expected) - set(seen))[:10]}')
  assert seen.pop(TOMBSTONE_ID)[0] == b'tombstone'
  partitions = set()
  for i, (key, record) in seen.items():
    assert key == (_key(i) or b'')  # PublishToKafka writes a missing key as an empty one
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
  # KafkaIO's Java writer here (--kafka_producer=java); the stream job's tests and the cluster
  # test below publish with the default, librdkafka in the Python workers.
  _roundtrip(kafka_bootstrap, '[local]', 'local', max_num_records=N_MESSAGES + 1,
             producer='java')


def test_roundtrip_on_standalone_cluster(kafka_bootstrap, flink_rest):
  _roundtrip(kafka_bootstrap, flink_rest, 'cluster')

  # The job was cancelled on the cluster too, and the cluster is still healthy.
  import urllib.request  # pylint: disable=import-outside-toplevel
  with urllib.request.urlopen(f'http://{flink_rest}/overview', timeout=5) as r:
    overview = json.load(r)
  assert overview['jobs-running'] == 0
  assert overview['taskmanagers'] == 1
