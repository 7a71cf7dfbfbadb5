"""The Kafka batches of jvm/loopback/attackdetection/kafka/ReadKafkaBatches.java as Python reads
them (transforms/kafka_io.py decode_batch), and BatchByStream on such batches. The Java side is
run end to end by tests/integration/test_kafka_flink.py and the stream job's tests."""

import struct
import zipfile

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.factories import message, network_record
from tests.test_loopback_jars import _pinned
from transforms import jvm, kafka_io
from transforms.dead_letter import DEAD_LETTER
from transforms.route import BatchByStream
from transforms.source import MessageBatch, SourceMessage


def encode(records):
  """The Java layout, written out from its description: records are (topic, partition,
  offset, timestamp ms, key or None, value or None)."""
  topics = list(dict.fromkeys(r[0] for r in records))
  out = struct.pack('<iii', 1, len(records), len(topics))
  for topic in topics:
    name = topic.encode()
    out += struct.pack('<i', len(name)) + name
  out += b''.join(struct.pack('<i', topics.index(r[0])) for r in records)
  out += b''.join(struct.pack('<i', r[1]) for r in records)
  out += b''.join(struct.pack('<q', r[2]) for r in records)
  out += b''.join(struct.pack('<q', r[3]) for r in records)
  out += b''.join(struct.pack('<i', -1 if r[4] is None else len(r[4])) for r in records)
  out += b''.join(struct.pack('<i', -1 if r[5] is None else len(r[5])) for r in records)
  return out + b''.join(r[4] or b'' for r in records) + b''.join(r[5] or b'' for r in records)


RECORDS = [
    ('sensor_messages', 3, 41, 1_700_000_000_123, b'k1', b'{"a": 1}'),
    ('process_activity', 0, 7, 1_700_000_000_124, None, b'[1, 2]'),
    ('sensor_messages', 1, 2**40, -1, b'', b''),
    ('sensor_messages', 2, 0, 5, b'\x00\xff', None),
    ('elsewhere', 0, 1, 6, None, 'é'.encode()),
]
TOPICS = {'sensor_messages': 'network', 'process_activity': 'process'}


def test_a_batch_decodes_to_the_messages_in_read_order_with_their_metadata():
  batch = kafka_io.decode_batch(encode(RECORDS), TOPICS)
  assert batch.messages == [
      SourceMessage('network', b'{"a": 1}', 'sensor_messages', 3, 41, 1_700_000_000_123, b'k1'),
      SourceMessage('process', b'[1, 2]', 'process_activity', 0, 7, 1_700_000_000_124, None),
      SourceMessage('network', b'', 'sensor_messages', 1, 2**40, -1, b''),
      SourceMessage('network', b'', 'sensor_messages', 2, 0, 5, b'\x00\xff'),
      SourceMessage('elsewhere', 'é'.encode(), 'elsewhere', 0, 1, 6, None),
  ]
  assert batch.nbytes == sum(len(r[5] or b'') for r in RECORDS)
  assert all(type(m.value) is bytes for m in batch.messages)  # pylint: disable=unidiomatic-typecheck
  assert kafka_io.decode_batch(encode([]), TOPICS) == MessageBatch([], 0)


def _with_topic_index(data, index):
  """A one-record batch of topic sensor_messages whose record names topic ``index``."""
  at = 12 + 4 + len('sensor_messages')
  return data[:at] + struct.pack('<i', index) + data[at + 4:]


@pytest.mark.parametrize('data', [
    b'', b'\x01\x00\x00\x00', encode(RECORDS)[:-1], encode(RECORDS) + b'x',
    struct.pack('<iii', 2, 0, 0), struct.pack('<iii', 1, -1, 0),
    _with_topic_index(encode(RECORDS[:1]), 1), _with_topic_index(encode(RECORDS[:1]), -1),
], ids=['empty', 'short header', 'truncated', 'trailing byte', 'other version', 'negative count',
        'unlisted topic', 'negative topic'])
def test_bytes_of_another_layout_are_refused(data):
  with pytest.raises(ValueError):
    kafka_io.decode_batch(data, TOPICS)


def test_batch_by_stream_routes_kafka_batches_message_by_message():
  first = kafka_io.decode_batch(encode([
      ('sensor_messages', 0, i, 1000 + i, None, message('network', network_record(i)).value) for i in range(5)] + [
      ('elsewhere', 0, 99, 1, None, b'{}')]), TOPICS)
  second = kafka_io.decode_batch(encode([
      ('sensor_messages', 1, i, 2000 + i, None, message('network', network_record(i)).value) for i in range(4)]), TOPICS)
  pipeline = TestPipeline()
  batches = (pipeline | beam.Create([first, second], reshuffle=False)
             | BatchByStream(['network', 'process'], batch_size=3))
  assert_that(batches['network'] | beam.FlatMap(lambda b: [(m.partition, m.offset) for m in b]),
              equal_to([(0, i) for i in range(5)] + [(1, i) for i in range(4)]), label='Network')
  assert_that(batches['network'] | beam.Map(len) | beam.CombineGlobally(max),
              equal_to([3]), label='BatchSize')
  assert_that(batches[DEAD_LETTER] | beam.Map(lambda row: (row['stage'], row['offset'])),
              equal_to([('route', 99)]), label='Unrouted')
  pipeline.run()


def test_message_batches_coder_round_trips_and_estimates_without_encoding():
  batch = kafka_io.decode_batch(encode(RECORDS), TOPICS)
  coder = beam.coders.registry.get_coder(MessageBatch)
  assert coder.decode(coder.encode(batch)) == batch
  assert batch.nbytes <= coder.estimate_size(batch) < batch.nbytes + 100 * len(batch.messages)


def test_the_expansion_launcher_carries_and_registers_the_batching_transform(tmp_path):
  jar = tmp_path / 'beam-sdks-java-io-expansion-service.jar'
  jar.symlink_to(_pinned(jvm.io_expansion_service_jar))
  built = jvm.loopback_jar('launcher', str(jar),
                           [jvm.EXPANSION_MAIN_SOURCE, *jvm.KAFKA_BATCHES_SOURCES],
                           main_class='LoopbackExpansionService',
                           services=jvm.KAFKA_BATCHES_SERVICES)
  with zipfile.ZipFile(built) as z:
    names = set(z.namelist())
    registered = z.read('META-INF/services/org.apache.beam.sdk.expansion.'
                        'ExternalTransformRegistrar').decode().split()
  assert registered == ['attackdetection.kafka.ReadKafkaBatches$Registrar']
  for cls in ('ReadKafkaBatches', 'ReadKafkaBatches$BatchFn', 'ReadKafkaBatches$Registrar',
              'ReadKafkaBatches$Configuration', 'KafkaBatchSource', 'KafkaBatchSource$Reader'):
    assert f'attackdetection/kafka/{cls}.class' in names
  assert 'org/apache/beam/sdk/io/kafka/KafkaSources.class' in names


def test_bad_batch_bounds_are_refused():
  with pytest.raises(ValueError, match='positive'):
    kafka_io.ReadKafkaBatches('localhost:9092', TOPICS, max_batch_records=0)
  with pytest.raises(ValueError, match='timestamp_policy'):
    kafka_io.ReadKafkaBatches('localhost:9092', TOPICS, timestamp_policy='Wallclock')


def _expanded(**kwargs) -> list:
  """(urn, environment urn) of every primitive of ReadKafkaBatches as the expansion service
  expands it."""
  pipeline = beam.Pipeline()
  _ = pipeline | kafka_io.ReadKafkaBatches('localhost:9', TOPICS, **kwargs)
  components = pipeline.to_runner_api().components
  return [(t.spec.urn, components.environments[t.environment_id].urn if t.environment_id
           else None) for t in components.transforms.values() if not t.subtransforms]


def test_an_unbounded_read_is_flinks_own_read_of_the_batching_source():
  """Flink reads one element per batch: a primitive Read (of KafkaBatchSource) and no Java
  DoFn after it, so no record enters the Java harness; a bounded read (counted in records)
  batches in a Java DoFn after KafkaIO's read instead."""
  _pinned(jvm.io_expansion_service_jar)
  with kafka_io.expansion_service():
    unbounded = _expanded()
    bounded = _expanded(max_num_records=10)
  python = 'beam:env:default:v1'
  assert sorted(unbounded) == [('beam:transform:pardo:v1', python),
                               ('beam:transform:read:v1', None)]
  assert ('beam:transform:pardo:v1', 'EMBEDDED') in bounded
