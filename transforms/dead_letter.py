"""Dead letters: every record that could not be processed, kept with its raw bytes.

Each stage that can fail emits to a tagged output named ``DEAD_LETTER``; the stream job
flattens them all into ``dead_letter/``. A row says where the bytes came from (stream, source,
partition, offset, index inside a host array), which stage refused them, and why.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Optional

from apache_beam.metrics import Metrics

from transforms.source import SourceMessage

DEAD_LETTER = 'dead_letter'
# Long enough to debug, short enough that a hostile 1 MB message cannot bloat every row twice.
MAX_ERROR_LENGTH = 500


def utc_now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def dead_letter_row(message: SourceMessage, stage: str, error: Any,
                    payload: Optional[bytes] = None,
                    record_index: Optional[int] = None) -> dict[str, Any]:
  """One ``dead_letter/`` row. ``payload`` defaults to the whole message's bytes."""
  reason = error if isinstance(error, str) else f'{type(error).__name__}: {error}'
  return {
      'stream': message.stream,
      'source': message.source,
      'partition': message.partition,
      'offset': message.offset,
      'record_index': record_index,
      'stage': stage,
      'error': reason[:MAX_ERROR_LENGTH],
      'payload': message.value if payload is None else payload,
      'failed_at': utc_now(),
  }


def dead_letter_counter(namespace: str, stream: str):
  """The Beam counter ``<namespace>/<stream>_dead_lettered`` (the job summary reads these)."""
  return Metrics.counter(namespace, f'{stream}_dead_lettered')


def batch_record_dead_letter(batch, position: int, stage: str, error: Any) -> dict[str, Any]:
  """The dead-letter row of one record of a :class:`transforms.batch.RecordBatch`: its whole
  message's bytes, or for a record of a host array that record as JSON."""
  index = batch.record_indexes[position]
  payload = (None if index is None else
             json.dumps(batch.row(position), default=str).encode('utf-8'))
  return dead_letter_row(batch.messages[position], stage, error, payload=payload,
                         record_index=index)
