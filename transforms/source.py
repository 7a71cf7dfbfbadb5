"""The one element type every source produces, so the graph downstream does not care where
messages come from (Kafka in production, files or TestStream in tests).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

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
