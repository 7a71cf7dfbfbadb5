"""Avro input end to end: generated traffic in Avro (with broken Avro among it) through a real
Kafka broker into ``python -m pipelines.stream --runner=FlinkRunner`` on an embedded Flink.

Network messages are in the Confluent wire format, their schema registered in a schema
registry (tests/registry_stub.py: no real registry runs here, docs/avro.md); host messages are
bare Avro bodies read with a schema file. The archive holds exactly the valid records sent, and
dead_letter/ exactly the broken messages, whole, with their bytes. And the generator's command
line sends Avro with a registry.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer

from generator.avro_messages import AvroEncoder
from generator.messages import Message
from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages
from harness.kafka import make_topics
from pipelines import generate, stream as stream_job
from schemas import avro as avro_schemas
from schemas.records import SCHEMAS
from tests.helpers import read_output
from tests.registry_stub import RegistryStub
from transforms.avro_decode import AvroDecodeError, AvroDecoder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

N_NETWORK = 400
MALFORMED = 0.05


def test_avro_messages_through_kafka_on_flink(kafka_bootstrap, synthetic_model_dir, tmp_path):
  suffix = uuid.uuid4().hex[:8]
  topics = {s: f'avro_{s}_{suffix}' for s in SCHEMAS}
  make_topics(kafka_bootstrap, list(topics.values()))
  registry = RegistryStub()
  schema_files = []
  for stream in ('process', 'memory'):
    path = tmp_path / f'{stream}.avsc'
    path.write_text(avro_schemas.message_schema_json(SCHEMAS[stream]))
    schema_files.append(f'--avro_schema_file={stream}={path}')

  start_ms = int((time.time() - 600) * 1000)
  configs = [
      SourceConfig(streams=('network',), count=N_NETWORK, seed=11,
                   malformed_fraction=MALFORMED, event_rate=500.0, start_ms=start_ms,
                   topics=topics),
      SourceConfig(streams=('process', 'memory'), duration_s=30, seed=11, machines=3,
                   malformed_fraction=MALFORMED, start_ms=start_ms, topics=topics),
  ]
  encoders = [AvroEncoder({topics['network']: SCHEMAS['network']}, registry.url, seed=1),
              AvroEncoder({topics[s]: SCHEMAS[s] for s in ('process', 'memory')}, seed=2)]
  sink = KafkaSink(kafka_bootstrap)
  sent: list[tuple[Message, Message]] = []  # (the JSON message, the Avro one sent)
  for config, encoder in zip(configs, encoders):
    for message in generate_messages(config):
      avro = encoder.encode(message)
      sink.send(avro)
      sent.append((message, avro))
  sink.close()
  assert sink.stats()['acknowledged'] == len(sent)
  malformed = sorted(avro.value for message, avro in sent if message.malformed)
  valid_uuids = {u for message, _ in sent if not message.malformed
                 and message.topic == topics['network'] for u in message.uuids}
  host_records = sum(len(json.loads(message.value)) for message, _ in sent
                     if not message.malformed and message.topic != topics['network'])
  assert malformed and valid_uuids and host_records

  output = str(tmp_path / 'out')

  def complete() -> bool:
    archived = len(read_output(output, 'archive/process')) + len(
        read_output(output, 'archive/memory'))
    return ({r['uuid'] for r in read_output(output, 'archive/network')} == valid_uuids and
            archived == host_records and
            len(read_output(output, 'dead_letter')) >= len(malformed))

  started = time.monotonic()
  try:
    with stream_job.running([
        '--runner=FlinkRunner', '--flink_master=[local]',
        f'--bootstrap_servers={kafka_bootstrap}',
        *[f'--{s}_topic={t}' for s, t in topics.items()],
        *[f'--{s}_format=avro' for s in SCHEMAS], f'--schema_registry_url={registry.url}',
        *schema_files, '--alerts_topic=', f'--output={output}',
        f'--model_dir={synthetic_model_dir}', '--roll_seconds=5',
        f'--job_name=it-avro-{suffix}']):
      deadline = time.monotonic() + 240
      while not complete() and time.monotonic() < deadline:
        time.sleep(2)
      time.sleep(6)  # one more roll: anything written twice would show now
  finally:
    registry.close()
  print(f'[timing] Avro stream job on embedded Flink: {time.monotonic() - started:.1f} s')

  network = read_output(output, 'archive/network')
  assert sorted(r['uuid'] for r in network) == sorted(valid_uuids)
  assert len(read_output(output, 'archive/process')) + len(
      read_output(output, 'archive/memory')) == host_records
  dead = read_output(output, 'dead_letter')
  assert sorted(d['payload'] for d in dead) == malformed, 'each broken message, whole'
  assert {d['stage'] for d in dead} == {'parse'}
  assert all(d['source'] in topics.values() and d['offset'] >= 0 for d in dead)
  assert registry.requests >= 1, 'the network schema came from the registry'
  print(f'[accounting] sent {len(sent)} Avro messages (broken {len(malformed)}): archived '
        f'network {len(network)}, host records {host_records}; dead letters {len(dead)}')


def _read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0) -> list[bytes]:
  consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'check-{uuid.uuid4().hex}',
                       'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
  consumer.subscribe([topic])
  values, deadline = [], time.monotonic() + timeout_s
  try:
    while len(values) < count and time.monotonic() < deadline:
      msg = consumer.poll(0.5)
      if msg is not None and not msg.error():
        values.append(msg.value())
  finally:
    consumer.close()
  return values


def test_generator_cli_sends_avro_with_a_registry(kafka_bootstrap, tmp_path):
  """python -m pipelines.generate --network_format=avro --schema_registry_url=...: the schema is
  registered under <topic>-value, every message is in the wire format with its id, and exactly
  the messages the report calls malformed are refused by the job's decoder."""
  topic = f'avro_gen_{uuid.uuid4().hex[:8]}'
  make_topics(kafka_bootstrap, [topic])
  registry = RegistryStub()
  try:
    report_path = tmp_path / 'report.json'
    assert generate.main([
        '--bootstrap_servers', kafka_bootstrap, '--streams', 'network', '--network_topic', topic,
        '--network_format', 'avro', '--schema_registry_url', registry.url, '--count', '200',
        '--rate', '0', '--malformed_fraction', '0.1', '--seed', '5', '--no_progress',
        '--report_json', str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    values = _read_topic(kafka_bootstrap, topic, 200)
    assert len(values) == 200
    decoder = AvroDecoder(SCHEMAS['network'], registry.url)
    refused = 0
    for value in values:
      try:
        record = decoder(value)
      except AvroDecodeError:
        refused += 1
      else:
        assert record['uuid'] and record['protocol_type'] in ('tcp', 'udp', 'icmp')
    assert refused == report['malformed'] > 0
    assert [s['schema'] for s in registry.schemas.values()] == [
        json.dumps(avro_schemas.message_schema(SCHEMAS['network']))]
  finally:
    registry.close()
