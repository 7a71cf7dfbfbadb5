"""Where generated messages go: a Kafka topic, or JSON-lines files for offline runs.

Both sinks count ``sent``, ``acknowledged`` and ``failed`` messages and collect the uuids of
acknowledged, well-formed network messages (``acked_uuids``), so that a test or the final
report can check delivery end to end.
"""

from __future__ import annotations

import collections
import functools
import os
from typing import Any, Mapping, Optional

from generator.messages import Message
from schemas.records import SCHEMAS

# The stream job's file-source mode reads <stream>.jsonl, one message value per line.
DEFAULT_FILES = {schema.default_topic: f'{stream}.jsonl' for stream, schema in SCHEMAS.items()}
# Kept whatever the caller passes: delivery must be confirmed by all in-sync replicas, and a
# retried send must not duplicate a message.
REQUIRED_PRODUCER_CONFIG = {'acks': 'all', 'enable.idempotence': True}
DEFAULT_PRODUCER_CONFIG = {'linger.ms': 20, 'compression.type': 'lz4',
                           'client.id': 'attack-detection-generator',
                           # librdkafka can keep a partition's stale leader after a broker
                           # restart until its next periodic refresh (5 min by default), with
                           # every message for it queued meanwhile.
                           'topic.metadata.refresh.interval.ms': 10_000}


class _Counting:
  def __init__(self):
    self.sent = 0
    self.acknowledged = 0
    self.failed = 0
    self.acked_uuids: list[str] = []
    self.errors: collections.Counter[str] = collections.Counter()

  def stats(self) -> dict[str, int]:
    return {'sent': self.sent, 'acknowledged': self.acknowledged, 'failed': self.failed}


class KafkaSink(_Counting):
  """A confluent-kafka producer with acks=all and idempotence; a delivery callback per message.

  ``producer_config`` adds librdkafka settings (security.protocol, sasl.*, ...); they are
  passed through and never logged. Message timestamps are the messages' event times.
  """

  def __init__(self, bootstrap: str, producer_config: Optional[Mapping[str, Any]] = None,
               collect_uuids: bool = True):
    super().__init__()
    from confluent_kafka import Producer  # imported here: the file sink needs no Kafka client
    config = {'bootstrap.servers': bootstrap, **DEFAULT_PRODUCER_CONFIG,
              **dict(producer_config or {}), **REQUIRED_PRODUCER_CONFIG}
    self._collect = collect_uuids
    self._producer = Producer(config)

  def _delivered(self, uuids: tuple[str, ...], err, _msg) -> None:
    if err is not None:
      self.failed += 1
      self.errors[err.name() if hasattr(err, 'name') else str(err)] += 1
    else:
      self.acknowledged += 1
      if self._collect:
        self.acked_uuids.extend(uuids)

  def send(self, message: Message) -> None:
    # A malformed message may have lost its uuid: do not claim it is readable by uuid.
    uuids = () if message.malformed else message.uuids
    callback = functools.partial(self._delivered, uuids)
    while True:
      try:
        self._producer.produce(message.topic, value=message.value, key=message.key,
                               timestamp=message.timestamp_ms, on_delivery=callback)
        break
      except BufferError:  # the local queue is full: serve callbacks until there is room
        self._producer.poll(0.1)
    self.sent += 1
    self._producer.poll(0)

  def poll(self) -> None:
    self._producer.poll(0)

  def flush(self, timeout_s: float = 60.0) -> int:
    """Waits for outstanding deliveries; returns how many are still unconfirmed."""
    return self._producer.flush(timeout_s)

  def close(self, timeout_s: float = 60.0) -> None:
    """Flushes; what is still unconfirmed after ``timeout_s`` counts as failed. The producer
    is released here rather than whenever the sink is garbage-collected: a sink kept alive
    (by a traceback, say) would otherwise reconnect to a stopped broker for ever."""
    if self._producer is None:
      return
    remaining = self.flush(timeout_s)
    if remaining:
      self.failed += remaining
      self.errors['not confirmed before close'] += remaining
    self._producer = None


class JsonLinesSink(_Counting):
  """One file per stream under ``directory``, each line exactly one message value.

  ``files`` maps topic -> file name (default: the default topics to network.jsonl,
  process.jsonl, memory.jsonl). The files are created (truncated) at construction. A write
  is its own acknowledgement.
  """

  def __init__(self, directory: str | os.PathLike, files: Optional[Mapping[str, str]] = None,
               collect_uuids: bool = True):
    super().__init__()
    os.makedirs(directory, exist_ok=True)
    self.paths = {topic: os.path.join(directory, name)
                  for topic, name in (files or DEFAULT_FILES).items()}
    self._files = {topic: open(path, 'wb', buffering=1 << 20)
                   for topic, path in self.paths.items()}
    self._collect = collect_uuids

  def send(self, message: Message) -> None:
    handle = self._files.get(message.topic)
    if handle is None:
      raise KeyError(f'no file for topic {message.topic!r}; known: {sorted(self._files)}')
    self.sent += 1
    handle.write(message.value + b'\n')
    self.acknowledged += 1
    if self._collect and not message.malformed:
      self.acked_uuids.extend(message.uuids)

  def poll(self) -> None:
    pass

  def flush(self, timeout_s: float = 0.0) -> int:
    for handle in self._files.values():
      handle.flush()
    return 0

  def close(self, timeout_s: float = 0.0) -> None:
    for handle in self._files.values():
      handle.close()
