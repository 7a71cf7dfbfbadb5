"""The generator against the real broker: every acknowledged uuid is readable from its topic,
with the event time as the Kafka record timestamp."""

import json
import time
import uuid as uuid_lib

import pytest
from confluent_kafka import Consumer, KafkaException

from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages
from harness.kafka import delete_topics, make_topics
from tests.helpers import START_MS

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_every_acknowledged_uuid_is_readable_from_the_topic(kafka_bootstrap):
  KAFKA_BOOTSTRAP = kafka_bootstrap  # pylint: disable=invalid-name
  suffix = uuid_lib.uuid4().hex[:8]
  topics = {s: f'test_generator_{s}_{suffix}' for s in ('network', 'process', 'memory')}
  make_topics(KAFKA_BOOTSTRAP, topics.values(), partitions=3)
  try:
    sink = KafkaSink(KAFKA_BOOTSTRAP)
    config = SourceConfig(count=3000, seed=4, start_ms=START_MS, machines=4,
                          malformed_fraction=0.02, topics=topics)
    sent_times = {}
    for message in generate_messages(config):
      sink.send(message)
      for ident in message.uuids:
        sent_times[ident] = message.timestamp_ms
    sink.close(60)
    assert sink.failed == 0 and sink.acknowledged == sink.sent == 3000, dict(sink.errors)
    acked = set(sink.acked_uuids)
    assert len(acked) > 2500

    consumer = Consumer({'bootstrap.servers': KAFKA_BOOTSTRAP, 'group.id': f'test-{suffix}',
                         'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    consumer.subscribe([topics['network']])
    found, deadline = {}, time.monotonic() + 60
    try:
      while not acked <= set(found) and time.monotonic() < deadline:
        for record in consumer.consume(500, timeout=1.0):
          if record.error():
            raise KafkaException(record.error())
          try:
            ident = json.loads(record.value())['uuid']
          except (ValueError, KeyError, TypeError, RecursionError):
            continue  # a malformed message
          found[ident] = record.timestamp()[1]
    finally:
      consumer.close()
    missing = acked - set(found)
    assert not missing, f'{len(missing)} acknowledged uuids not readable, e.g. {list(missing)[:3]}'
    # the Kafka timestamp is the event time
    assert all(found[i] == sent_times[i] for i in acked)
  finally:
    delete_topics(KAFKA_BOOTSTRAP, topics.values())
