"""Kafka in and out of the Beam pipeline: :class:`ReadKafkaMessages` and :class:`PublishToKafka`.

KafkaIO is a Java transform: Python expands it through Beam's IO expansion service (the pinned jar,
see transforms/jvm.py) and the Flink runner executes it. How it runs with no Docker anywhere:

* the expansion service is started with ``--defaultEnvironmentType=EMBEDDED`` and
  ``--experiments=use_deprecated_read``: the Kafka reader becomes Flink's native unbounded source
  (``UnboundedSourceWrapper``), and KafkaIO's writer (``PublishToKafka(producer='java')``; the
  default producer is librdkafka in the Python workers, transforms/kafka_publish.py) runs in a
  Java SDK harness *inside the Flink JVM*. Their classes come from the job server's class path
  (its jar and the project's classes, see transforms/jvm.py), which Flink gets as the job's
  user jars (on a remote cluster the job server uploads them with the job);
* the Python DoFns run wherever the job's environment says. The stream and retrain jobs use
  ``PROCESS`` (SDK worker processes started by scripts/sdk_worker.sh); the job server, the
  environments and every other Flink default live in pipelines/runners.py.

The expansion service listens on loopback only (:func:`expansion_service`; Beam itself binds all
interfaces, see docs/RUNTIME.md).

Reading: the project's own Java transform (jvm/loopback/attackdetection/kafka/ReadKafkaBatches.java,
registered with the expansion service under :data:`READ_BATCHES_URN`) wraps KafkaIO's unbounded
source so that each element Flink reads is a batch of records (KafkaBatchSource.java), up to
``max_batch_records`` records each; :func:`decode_batch` turns one into a
:class:`transforms.source.MessageBatch` with numpy. Beam's
own ``ReadFromKafka`` hands Python one element per record, each first turned into a Row in the
Java harness: two Fn API crossings and a Row per message (benchmarks/README.md). Element types:
:class:`ReadKafkaBatches` -> MessageBatch (timestamped by the latest record in it);
:class:`ReadKafkaMessages` -> SourceMessage, timestamped by its Kafka record time.

Beam Python 2.77's ``WriteToKafka`` works with the Java 2.62 expansion service as it is. (Its
``ReadFromKafka`` sends fields Java 2.62 does not know; the payload of ReadKafkaBatches, which
takes KafkaIO's field names, leaves out every unset field for the same reason.)

Secrets (SASL passwords, JAAS lines, key store passwords) are passed through to Kafka untouched and
never logged by this module (the transforms' reprs show topics only).
"""

from __future__ import annotations

import os
import struct
import typing
import zipfile
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, WriteToKafka
from apache_beam.transforms.external import (ExternalTransform, JavaJarExpansionService,
                                             NamedTupleBasedPayloadBuilder)
from apache_beam.transforms.window import TimestampedValue

from transforms import fn_data, jvm, kafka_publish
from transforms.source import MessageBatch, SourceMessage

# Arguments that make the expanded KafkaIO runnable inside the Flink JVM (no Docker, no `boot`).
EXPANSION_SERVICE_ARGS = ('--defaultEnvironmentType=EMBEDDED', '--experiments=use_deprecated_read')



_EXPANSION_SERVICES: Dict[str, JavaJarExpansionService] = {}


def expansion_service(jars_dir: Optional[str] = None) -> JavaJarExpansionService:
  """The expansion service for KafkaIO, on the pinned jar, set up for the EMBEDDED environment.

  One object per jar: Beam starts the Java process lazily when a transform is expanded, reuses it
  for the other Kafka transforms of the same pipeline, and stops it afterwards.
  """
  jar = jvm.io_expansion_service_jar(jars_dir)
  service = _EXPANSION_SERVICES.get(jar)
  if service is None:
    launcher, args = expansion_service_command(jars_dir)
    service = JavaJarExpansionService(launcher, extra_args=[jvm.LOCAL_HOST, '{{PORT}}', *args])
    _EXPANSION_SERVICES[jar] = service
  return service


def expansion_service_command(jars_dir: Optional[str] = None) -> Tuple[str, List[str]]:
  """``(launcher jar, arguments after host and port)`` of the expansion service: what
  :func:`expansion_service` starts."""
  jar = jvm.io_expansion_service_jar(jars_dir)
  # Beam's own main listens on all interfaces; the launcher binds the host it is given.
  # It also carries the project's ReadKafkaBatches transform and registers it.
  launcher = jvm.loopback_jar('expansion-service-loopback', jar,
                              [jvm.EXPANSION_MAIN_SOURCE, *jvm.KAFKA_BATCHES_SOURCES],
                              main_class=jvm.EXPANSION_MAIN_CLASS,
                              services=jvm.KAFKA_BATCHES_SERVICES)
  return launcher, expansion_service_args(jar)


def expansion_service_args(jar: str) -> List[str]:
  """The expansion service's options, for its own JVM or the Flink job server's (which runs
  it beside the job service: pipelines/runners.py); ``jar`` is the one it runs from."""
  # ``--filesToStage`` names what the expanded environment declares as its artifacts; an
  # EMBEDDED environment never loads them (its classes come from the job server jar), so
  # staging the 130 MB expansion jar itself would only cost time at each submission. The
  # smallest real jar we have stands in for it.
  return [f'--filesToStage={_stage_marker(jar)}', *EXPANSION_SERVICE_ARGS]


def _stage_marker(beside_jar: str) -> str:
  marker = os.path.join(os.path.dirname(beside_jar), 'embedded-environment-marker.jar')
  if not os.path.isfile(marker):
    tmp = f'{marker}.{os.getpid()}.tmp'
    with zipfile.ZipFile(tmp, 'w') as jar:
      jar.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\n')
      jar.writestr('README.txt', 'KafkaIO runs EMBEDDED in the Flink JVM; this jar is never loaded.\n')
    os.replace(tmp, marker)
  return marker


# --------------------------------------------------------------------------------------------
# Compatibility of the Python 2.77 KafkaIO wrappers with the Java 2.62 expansion service
# --------------------------------------------------------------------------------------------


def _payload_without_unset_fields(schema_instance: typing.NamedTuple) -> bytes:
  """The external-transform payload with every ``None`` field left out.

  The Java side builds its configuration object by calling one setter per field present in the
  payload and fails on a field it does not know. apache-beam 2.77's ``ReadFromKafka`` always sends
  three fields Java 2.62 lacks (dynamic_read_poll_interval_seconds, consumer_factory_fn_class,
  consumer_factory_fn_params), all ``None`` unless used. A missing field and a ``None`` one mean
  the same to Java (the setter is not called), so dropping them works with old and new Java alike.
  """
  hints = typing.get_type_hints(type(schema_instance))
  kept = {k: v for k, v in schema_instance._asdict().items() if v is not None}
  reduced = typing.NamedTuple(type(schema_instance).__name__, [(k, hints[k]) for k in kept])
  return NamedTupleBasedPayloadBuilder(reduced(**kept)).payload()


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _client_config(bootstrap_servers: str, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
  if not bootstrap_servers:
    raise ValueError('bootstrap_servers is required')
  config = {str(k): str(v) for k, v in (extra or {}).items()}
  config['bootstrap.servers'] = bootstrap_servers
  return config


# The URN and layout of jvm/loopback/attackdetection/kafka/ReadKafkaBatches.java.
READ_BATCHES_URN = 'attackdetection:kafka:read_batches:v1'
_BATCH_VERSION = 1
_HEADER = struct.Struct('<iii')
_LENGTH = struct.Struct('<i')
# Records per batch out of the Java side: a few thousand records per element into Python, and
# one batch's bytes stay far below gRPC's limits.
DEFAULT_MAX_BATCH_RECORDS = 5000
DEFAULT_MAX_BATCH_BYTES = 4 << 20
# How long the source may keep filling one batch while records keep coming: bounds what a
# batch adds to an alert's latency at a steady trickle (100 ms bundles follow it). A reader
# caught up (KafkaIO's backlog below one batch's bytes) fills for a quarter of it: there
# waiting only delays the first records (KafkaBatchSource.java).
DEFAULT_MAX_BATCH_MS = 20


class _ReadKafkaBatchesSchema(NamedTuple):
  consumer_config: Mapping[str, str]
  topics: List[str]
  timestamp_policy: str
  commit_offset_in_finalize: bool
  max_num_records: Optional[int]
  max_read_time: Optional[int]
  max_batch_records: int
  max_batch_bytes: int
  max_batch_millis: int


def decode_batch(data: bytes, stream_by_topic: Mapping[str, str]) -> MessageBatch:
  """One batch in ReadKafkaBatches.java's layout -> a MessageBatch of SourceMessages, in the
  order the records were read. A topic not in ``stream_by_topic`` is its own stream name
  (BatchByStream dead-letters it). Raises ValueError on bytes of any other layout."""
  if len(data) < _HEADER.size:
    raise ValueError(f'Kafka batch of {len(data)} bytes has no header')
  version, n, topic_count = _HEADER.unpack_from(data, 0)
  if version != _BATCH_VERSION or n < 0 or topic_count < 0:
    raise ValueError(f'not a Kafka batch of version {_BATCH_VERSION}: header '
                     f'{(version, n, topic_count)}')
  position = _HEADER.size
  topics = []
  for _ in range(topic_count):
    length, = _LENGTH.unpack_from(data, position)
    position += _LENGTH.size
    topics.append(data[position:position + length].decode('utf-8'))
    position += length
  columns = {}
  for name, dtype in (('topic', '<i4'), ('partition', '<i4'), ('offset', '<i8'),
                      ('timestamp', '<i8'), ('key_length', '<i4'), ('value_length', '<i4')):
    array = np.frombuffer(data, dtype=dtype, count=n, offset=position)
    position += array.nbytes
    columns[name] = array
  key_lengths, value_lengths = columns['key_length'], columns['value_length']
  key_ends = position + np.cumsum(np.maximum(key_lengths, 0))
  keys_end = int(key_ends[-1]) if n else position
  value_ends = keys_end + np.cumsum(np.maximum(value_lengths, 0))
  if (int(value_ends[-1]) if n else keys_end) != len(data):
    raise ValueError(f'Kafka batch of {len(data)} bytes does not add up')
  if n and not 0 <= int(columns['topic'].min()) <= int(columns['topic'].max()) < topic_count:
    raise ValueError('Kafka batch names a topic it does not list')
  streams = [stream_by_topic.get(topic, topic) for topic in topics]
  messages = []
  append = messages.append
  key_start, value_start = position, keys_end
  for topic, partition, offset, timestamp, key_length, value_length, key_end, value_end in zip(
      columns['topic'].tolist(), columns['partition'].tolist(), columns['offset'].tolist(),
      columns['timestamp'].tolist(), key_lengths.tolist(), value_lengths.tolist(),
      key_ends.tolist(), value_ends.tolist()):
    append(SourceMessage(streams[topic], data[value_start:value_end] if value_length >= 0 else b'',
                         topics[topic], partition, offset, timestamp,
                         data[key_start:key_end] if key_length >= 0 else None))
    key_start, value_start = key_end, value_end
  return MessageBatch(messages, value_start - keys_end)


class DecodeBatchesFn(beam.DoFn):
  """One batch in ReadKafkaBatches.java's layout (bytes) -> its MessageBatch
  (:func:`decode_batch`).

  Its ``setup`` also makes this worker's output to the runner honour
  ``--experiments=data_buffer_time_limit_ms`` with whole elements only (transforms/fn_data.py)
  where the worker's own start has not (a LOOPBACK worker: the job's process).
  """

  def __init__(self, stream_by_topic: Mapping[str, str]):
    self._stream_by_topic = dict(stream_by_topic)

  def setup(self):
    fn_data.install()

  def process(self, data: bytes):
    yield decode_batch(data, self._stream_by_topic)


def _timestamped_messages(batch: MessageBatch):
  """A MessageBatch -> its SourceMessages, each stamped with its Kafka record time."""
  for message in batch.messages:
    if message.timestamp_ms is None or message.timestamp_ms < 0:
      yield message
    else:
      yield TimestampedValue(message, message.timestamp_ms / 1000.0)


class ReadKafkaBatches(beam.PTransform):
  """Reads Kafka topics into :class:`MessageBatch` elements: the messages the reader has ready,
  in batches of up to ``max_batch_records`` messages (or ``max_batch_bytes`` of values, or what
  came in ``max_batch_ms``), each stamped with its latest record's time. Each message keeps its raw bytes, topic, partition,
  offset, Kafka timestamp and key.

  Args:
    bootstrap_servers: ``host:port[,host:port]``.
    topics: ``{topic: stream_name}``, e.g. ``{'sensor_messages': 'network'}``; the stream name
      becomes ``SourceMessage.stream``.
    consumer_config: extra Kafka consumer settings, passed through unchanged (Java client names:
      ``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``, ``ssl.truststore.location``,
      ``ssl.truststore.type`` (``PEM`` works for PEM files), ...). Values are never logged here.
    group_id: the consumer group (``group.id``); needed for ``commit_offsets``.
    start_offset: ``earliest`` or ``latest``: where to start without a committed offset
      (``auto.offset.reset``; an explicit value in ``consumer_config`` wins).
    commit_offsets: commit consumed offsets when Flink finalizes a checkpoint (needs ``group_id``
      and checkpointing, see pipelines/runners.py). Flink takes the reader's checkpoint between
      two batches, so no record a committed offset covers is still in an unsent batch.
    timestamp_policy: ``CreateTime`` (default: the producer's record time, which the generator
      sets to the event time), ``LogAppendTime`` or ``ProcessingTime``.
    max_num_records / max_read_time_s: make the read bounded (demos and tests only).
    max_batch_records / max_batch_bytes / max_batch_ms: the batch bounds (a batch also closes
      when the reader has no more records ready, and fills for a quarter of ``max_batch_ms``
      when the reader is caught up; with ``max_num_records`` or ``max_read_time_s``, at each
      bundle's end, and ``max_batch_ms`` does not apply).
    expansion_service: defaults to :func:`expansion_service`; ``host:port`` of one kept
      running (pipelines/services.py) starts no JVM.
  """

  def __init__(
      self,
      bootstrap_servers: str,
      topics: Mapping[str, str],
      consumer_config: Optional[Mapping[str, str]] = None,
      *,
      group_id: Optional[str] = None,
      start_offset: str = 'earliest',
      commit_offsets: bool = False,
      timestamp_policy: str = ReadFromKafka.create_time_policy,
      max_num_records: Optional[int] = None,
      max_read_time_s: Optional[int] = None,
      max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS,
      max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
      max_batch_ms: int = DEFAULT_MAX_BATCH_MS,
      expansion_service: Union[JavaJarExpansionService, str, None] = None,  # pylint: disable=redefined-outer-name
      label: Optional[str] = None):
    super().__init__(label)
    if not topics:
      raise ValueError('topics must name at least one topic')
    if start_offset not in ('earliest', 'latest'):
      raise ValueError("start_offset must be 'earliest' or 'latest'")
    if commit_offsets and not (group_id or (consumer_config or {}).get('group.id')):
      raise ValueError('commit_offsets needs a group_id')
    if timestamp_policy not in (ReadFromKafka.create_time_policy,
                                ReadFromKafka.log_append_time, ReadFromKafka.processing_time_policy):
      raise ValueError(f'unknown timestamp_policy {timestamp_policy!r}')
    if max_batch_records < 1 or max_batch_bytes < 1 or max_batch_ms < 0:
      raise ValueError('max_batch_records and max_batch_bytes must be positive, max_batch_ms '
                       'not negative')
    self._topics = dict(topics)
    config = _client_config(bootstrap_servers, consumer_config)
    config.setdefault('auto.offset.reset', start_offset)
    if group_id:
      config['group.id'] = group_id
    if commit_offsets:
      # Offsets are committed when Flink finalizes a checkpoint; the consumer's own periodic
      # auto-commit (Kafka's default with a group.id) would commit what is not yet processed.
      config.setdefault('enable.auto.commit', 'false')
    self._config = config
    self._commit = commit_offsets
    self._timestamp_policy = timestamp_policy
    self._max_num_records = max_num_records
    self._max_read_time_s = max_read_time_s
    self._max_batch_records = max_batch_records
    self._max_batch_bytes = max_batch_bytes
    self._max_batch_ms = max_batch_ms
    self._expansion_service = expansion_service

  def __repr__(self):  # never show the consumer config (secrets)
    return f'{type(self).__name__}(topics={sorted(self._topics)})'

  def expand(self, pbegin):
    payload = _payload_without_unset_fields(_ReadKafkaBatchesSchema(
        consumer_config=self._config,
        topics=sorted(self._topics),
        timestamp_policy=self._timestamp_policy,
        commit_offset_in_finalize=self._commit,
        max_num_records=self._max_num_records,
        max_read_time=self._max_read_time_s,
        max_batch_records=self._max_batch_records,
        max_batch_bytes=self._max_batch_bytes,
        max_batch_millis=self._max_batch_ms))
    read = ExternalTransform(READ_BATCHES_URN, payload,
                             self._expansion_service or expansion_service())
    return (
        pbegin
        | 'ReadKafkaBatches' >> read.with_output_types(bytes)
        | 'Decode' >> beam.ParDo(DecodeBatchesFn(self._topics)).with_output_types(MessageBatch))


class ReadKafkaMessages(ReadKafkaBatches):
  """:class:`ReadKafkaBatches` one :class:`SourceMessage` per element, each timestamped by its
  Kafka record time (same arguments)."""

  def expand(self, pbegin):
    return (super().expand(pbegin)
            | 'ToSourceMessages' >> beam.FlatMap(_timestamped_messages).with_output_types(
                SourceMessage))


def _as_kv_bytes(element) -> Tuple[bytes, bytes]:
  key, value = element
  if key is not None and not isinstance(key, bytes):
    key = str(key).encode('utf-8')
  if not isinstance(value, bytes):
    value = str(value).encode('utf-8')
  return (key if key is not None else b''), value


class PublishToKafka(beam.PTransform):
  """Writes a PCollection of ``(key bytes, value bytes)`` to one Kafka topic.

  ``str`` keys / values are UTF-8 encoded; a ``None`` key is written as an empty key.
  ``producer_config`` takes Java client settings, like ``ReadKafkaMessages.consumer_config``
  (security, TLS, ``acks``, ``compression.type``, ...). ``producer``: ``python`` sends from the
  Python workers with librdkafka, the settings translated (transforms/kafka_publish.py; raises
  :class:`~transforms.kafka_publish.UntranslatableConfig` for one it cannot take); ``java``
  through KafkaIO's writer in the runner's JVM, any Java setting. Values are never logged here.
  """

  def __init__(
      self,
      bootstrap_servers: str,
      topic: str,
      producer_config: Optional[Mapping[str, str]] = None,
      *,
      producer: str = kafka_publish.PYTHON,
      expansion_service: Union[JavaJarExpansionService, str, None] = None,  # pylint: disable=redefined-outer-name
      label: Optional[str] = None):
    super().__init__(label)
    if not topic:
      raise ValueError('topic is required')
    if producer not in kafka_publish.PRODUCERS:
      raise ValueError(f'producer must be one of {kafka_publish.PRODUCERS}, not {producer!r}')
    self._topic = topic
    self._config = _client_config(bootstrap_servers, producer_config)
    self._producer = producer
    if producer == kafka_publish.PYTHON:
      self._config = kafka_publish.librdkafka_config(self._config)
    self._expansion_service = expansion_service

  def __repr__(self):
    return f'PublishToKafka(topic={self._topic!r})'

  def expand(self, pcoll):
    messages = pcoll | 'ToKV' >> beam.Map(_as_kv_bytes).with_output_types(Tuple[bytes, bytes])
    if self._producer == kafka_publish.PYTHON:
      return messages | 'Publish' >> beam.ParDo(
          kafka_publish.PublishFn(self._topic, self._config))
    return messages | 'WriteToKafka' >> WriteToKafka(
        producer_config=self._config,
        topic=self._topic,
        expansion_service=self._expansion_service or expansion_service())


__all__: Iterable[str] = ('EXPANSION_SERVICE_ARGS', 'PublishToKafka', 'READ_BATCHES_URN',
                         'ReadKafkaBatches', 'ReadKafkaMessages', 'decode_batch',
                         'expansion_service')
