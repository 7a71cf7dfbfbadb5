"""The one element type every source produces, so the graph downstream does not care where
messages come from (Kafka in production, files or TestStream in tests).
"""

from __future__ import annotations

from typing import NamedTuple, Optional


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
