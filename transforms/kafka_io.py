"""Kafka in and out of the Beam pipeline: :class:`ReadKafkaMessages` and :class:`PublishToKafka`.

KafkaIO is a Java transform: Python expands it through Beam's IO expansion service (the pinned jar,
see transforms/jvm.py) and the Flink runner executes it. How it runs with no Docker anywhere:

* the expansion service is started with ``--defaultEnvironmentType=EMBEDDED`` and
  ``--experiments=use_deprecated_read``: the Kafka reader becomes Flink's native unbounded source
  (``UnboundedSourceWrapper``) and the few Java DoFns around it (KafkaRecord -> Row, the writer) run
  in a Java SDK harness *inside the Flink JVM*. Their classes come from the job server jar, which
  Flink gets as the job's user jar (on a remote cluster the job server uploads it with the job);
* the Python DoFns run wherever the job's environment says. The stream and retrain jobs use
  ``PROCESS`` (SDK worker processes started by scripts/sdk_worker.sh); the job server, the
  environments and every other Flink default live in pipelines/runners.py.

The expansion service listens on loopback only (:func:`expansion_service`; Beam itself binds all
interfaces, see docs/RUNTIME.md).

Beam Python 2.77's ``ReadFromKafka`` sends fields the Java 2.62 expansion service does not know;
:func:`_read_from_kafka` leaves them out.

Element type out of :class:`ReadKafkaMessages`: :class:`transforms.source.SourceMessage`, with the
element timestamp set from the Kafka record timestamp.

Secrets (SASL passwords, JAAS lines, key store passwords) are passed through to Kafka untouched and
never logged by this module (the transforms' reprs show topics only).
"""

from __future__ import annotations

import inspect
import os
import typing
import zipfile
from typing import Dict, Iterable, Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, ReadFromKafkaSchema, WriteToKafka
from apache_beam.transforms.external import JavaJarExpansionService, NamedTupleBasedPayloadBuilder
from apache_beam.transforms.window import TimestampedValue

from transforms import jvm
from transforms.source import SourceMessage

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
    # Beam's own main listens on all interfaces; the launcher binds LOCAL_HOST.
    launcher = jvm.loopback_jar('expansion-service-loopback', jar, [jvm.EXPANSION_MAIN_SOURCE],
                                main_class='LoopbackExpansionService')
    # ``{{PORT}}`` is filled in by Beam. ``--filesToStage`` names what the expanded environment
    # declares as its artifacts; an EMBEDDED environment never loads them (its classes come from
    # the job server jar), so staging the 130 MB expansion jar itself would only cost time at each
    # submission. The smallest real jar we have stands in for it.
    service = JavaJarExpansionService(
        launcher,
        extra_args=[jvm.LOCAL_HOST, '{{PORT}}', f'--filesToStage={_stage_marker(jar)}',
                    *EXPANSION_SERVICE_ARGS])
    _EXPANSION_SERVICES[jar] = service
  return service


def _stage_marker(expansion_jar: str) -> str:
  marker = os.path.join(os.path.dirname(expansion_jar), 'embedded-environment-marker.jar')
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


def _read_from_kafka(**kwargs) -> ReadFromKafka:
  """``ReadFromKafka(**kwargs)`` whose payload the pinned Java expansion service accepts."""
  transform = ReadFromKafka(**kwargs)
  defaults = {
      name: p.default
      for name, p in inspect.signature(ReadFromKafka.__init__).parameters.items()
      if p.default is not inspect.Parameter.empty
  }
  values = {**defaults, **kwargs}
  schema = ReadFromKafkaSchema(**{f: values[f] for f in ReadFromKafkaSchema._fields})
  transform._payload = _payload_without_unset_fields(schema)  # pylint: disable=protected-access
  return transform


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _client_config(bootstrap_servers: str, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
  if not bootstrap_servers:
    raise ValueError('bootstrap_servers is required')
  config = {str(k): str(v) for k, v in (extra or {}).items()}
  config['bootstrap.servers'] = bootstrap_servers
  return config


def _to_source_message(record, stream_by_topic: Mapping[str, str]):
  """A KafkaIO metadata Row -> a timestamped SourceMessage."""
  topic = record.topic
  timestamp_ms = int(record.timestamp) if record.timestamp is not None else None
  message = SourceMessage(
      stream=stream_by_topic.get(topic, topic),
      value=bytes(record.value) if record.value is not None else b'',
      source=topic,
      partition=int(record.partition),
      offset=int(record.offset),
      timestamp_ms=timestamp_ms,
      key=bytes(record.key) if record.key is not None else None,
  )
  if timestamp_ms is None or timestamp_ms < 0:
    return message
  return TimestampedValue(message, timestamp_ms / 1000.0)


class ReadKafkaMessages(beam.PTransform):
  """Reads Kafka topics into :class:`SourceMessage` elements, timestamped by the Kafka record time.

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
      and checkpointing, see pipelines/runners.py).
    timestamp_policy: ``CreateTime`` (default: the producer's record time, which the generator
      sets to the event time), ``LogAppendTime`` or ``ProcessingTime``.
    max_num_records / max_read_time_s: make the read bounded (demos and tests only).
    expansion_service: defaults to :func:`expansion_service`.
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
      expansion_service: Optional[JavaJarExpansionService] = None,  # pylint: disable=redefined-outer-name
      label: Optional[str] = None):
    super().__init__(label)
    if not topics:
      raise ValueError('topics must name at least one topic')
    if start_offset not in ('earliest', 'latest'):
      raise ValueError("start_offset must be 'earliest' or 'latest'")
    if commit_offsets and not (group_id or (consumer_config or {}).get('group.id')):
      raise ValueError('commit_offsets needs a group_id')
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
    self._expansion_service = expansion_service

  def __repr__(self):  # never show the consumer config (secrets)
    return f'ReadKafkaMessages(topics={sorted(self._topics)})'

  def expand(self, pbegin):
    read = _read_from_kafka(
        consumer_config=self._config,
        topics=sorted(self._topics),
        with_metadata=True,
        timestamp_policy=self._timestamp_policy,
        commit_offset_in_finalize=self._commit,
        max_num_records=self._max_num_records,
        max_read_time=self._max_read_time_s,
        expansion_service=self._expansion_service or expansion_service(),
    )
    topics = self._topics
    return (
        pbegin
        | 'ReadFromKafka' >> read
        | 'ToSourceMessage' >> beam.Map(_to_source_message, topics).with_output_types(SourceMessage))


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
  ``producer_config`` passes through like ``ReadKafkaMessages.consumer_config`` (security, TLS,
  ``acks``, ``compression.type``, ...). Values are never logged here.
  """

  def __init__(
      self,
      bootstrap_servers: str,
      topic: str,
      producer_config: Optional[Mapping[str, str]] = None,
      *,
      expansion_service: Optional[JavaJarExpansionService] = None,  # pylint: disable=redefined-outer-name
      label: Optional[str] = None):
    super().__init__(label)
    if not topic:
      raise ValueError('topic is required')
    self._topic = topic
    self._config = _client_config(bootstrap_servers, producer_config)
    self._expansion_service = expansion_service

  def __repr__(self):
    return f'PublishToKafka(topic={self._topic!r})'

  def expand(self, pcoll):
    return (
        pcoll
        | 'ToKV' >> beam.Map(_as_kv_bytes).with_output_types(Tuple[bytes, bytes])
        | 'WriteToKafka' >> WriteToKafka(
            producer_config=self._config,
            topic=self._topic,
            expansion_service=self._expansion_service or expansion_service()))


__all__: Iterable[str] = ('EXPANSION_SERVICE_ARGS', 'PublishToKafka', 'ReadKafkaMessages',
                         'expansion_service')
