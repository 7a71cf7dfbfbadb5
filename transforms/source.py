"""The element types every source produces, so the graph downstream does not care where
messages come from (Kafka in production, files or TestStream in tests): single messages, or
batches of them (:class:`MessageBatch`, the Kafka source's).
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional

import apache_beam as beam


class SourceMessage(NamedTuple):
  """One raw message as it arrived, before any parsing.

  ``stream`` is the logical stream (``network``, ``process`` or ``memory``); ``source`` is
  where it came from (a Kafka topic, or a file path); ``partition`` / ``offset`` locate it
  there (-1 when the source has no such notion). ``timestamp_ms`` is the source's own
  timestamp (Kafka's record timestamp), used as event time when the record carries none.
  """
  stream: str
  value: bytes
  source: str = ''
  partition: int = -1
  offset: int = -1
  timestamp_ms: Optional[int] = None
  key: Optional[bytes] = None


class SourceMessageCoder(beam.coders.Coder):
  """SourceMessage as a tuple of primitives, with a size estimate that does not encode.

  The SDK harness samples elements' sizes for its metrics by encoding them; a list of
  thousands of messages sampled that way was pickled message by message.
  """

  _TUPLE = beam.coders.FastPrimitivesCoder()

  def encode(self, value: SourceMessage) -> bytes:
    return self._TUPLE.encode(tuple(value))

  def decode(self, encoded: bytes) -> SourceMessage:
    return SourceMessage(*self._TUPLE.decode(encoded))

  def is_deterministic(self) -> bool:
    return False  # never a grouping key

  def estimate_size(self, value: SourceMessage) -> int:
    return len(value.value or b'') + len(value.source) + len(value.key or b'') + 32

  def to_type_hint(self):
    return SourceMessage


beam.coders.registry.register_coder(SourceMessage, SourceMessageCoder)


class MessageBatch(NamedTuple):
  """Messages that arrived together, of any streams: what the Kafka source hands on per
  element (one Fn API element per batch, not per message; see transforms/kafka_io.py).
  ``nbytes`` is the sum of the messages' value sizes."""
  messages: List[SourceMessage]
  nbytes: int


class MessageBatchCoder(beam.coders.Coder):
  """MessageBatch as lists of primitives; its size is ``nbytes``, known without encoding."""

  _TUPLE = beam.coders.FastPrimitivesCoder()

  def encode(self, value: MessageBatch) -> bytes:
    return self._TUPLE.encode(([tuple(m) for m in value.messages], value.nbytes))

  def decode(self, encoded: bytes) -> MessageBatch:
    messages, nbytes = self._TUPLE.decode(encoded)
    return MessageBatch([SourceMessage(*m) for m in messages], nbytes)

  def is_deterministic(self) -> bool:
    return False  # never a grouping key

  def estimate_size(self, value: MessageBatch) -> int:
    return value.nbytes + 48 * len(value.messages)

  def to_type_hint(self):
    return MessageBatch


beam.coders.registry.register_coder(MessageBatch, MessageBatchCoder)
