"""Dead letters: every record that could not be processed, kept with its raw bytes.

Each stage that can fail emits to a tagged output named ``DEAD_LETTER``; the stream job
flattens them all into ``dead_letter/``. A row says where the bytes came from (stream, source,
partition, offset, index inside a host array), which stage refused them, and why.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Callable, Optional

import orjson
from apache_beam.metrics import Metrics

from schemas.limits import MAX_ERROR_LENGTH, MAX_MESSAGE_BYTES
from transforms.batch import RecordBatch
from transforms.source import SourceMessage

DEAD_LETTER = 'dead_letter'
log = logging.getLogger(__name__)


def utc_now() -> datetime.datetime:
  return datetime.datetime.now(datetime.timezone.utc)


def _reason(error: Any) -> str:
  """The error as text that any Parquet string column holds; never raises (an exception's
  ``__str__`` is arbitrary code)."""
  try:
    reason = error if isinstance(error, str) else f'{type(error).__name__}: {error}'
  except Exception:  # pylint: disable=broad-except
    reason = f'{type(error).__name__} (its message could not be read)'
  return reason[:MAX_ERROR_LENGTH].encode('utf-8', 'backslashreplace').decode('utf-8')


def raw_bytes(message: Any) -> bytes:
  """The message's bytes as they arrived; for an element that is not a SourceMessage at all,
  its repr (bounded), so even that is kept."""
  value = getattr(message, 'value', None) if isinstance(message, SourceMessage) else message
  if isinstance(value, bytes):
    return value
  if value is None:
    return b''
  try:
    if isinstance(value, (bytearray, memoryview)):
      return bytes(value)
    return repr(value)[:MAX_MESSAGE_BYTES].encode('utf-8', 'backslashreplace')
  except Exception:  # pylint: disable=broad-except
    return type(value).__name__.encode()


def _text(value: Any) -> Optional[str]:
  return value if isinstance(value, str) or value is None else None


def _int(value: Any) -> Optional[int]:
  return value if type(value) is int and -2**63 <= value < 2**63 else None


def dead_letter_row(message: SourceMessage, stage: str, error: Any,
                    payload: Optional[bytes] = None,
                    record_index: Optional[int] = None) -> dict[str, Any]:
  """One ``dead_letter/`` row. ``payload`` defaults to the whole message's bytes.

  Never raises, whatever ``message`` and ``error`` are: it is the last resort of every
  stage, and an exception here would fail the bundle and replay the message forever.
  """
  if not isinstance(message, SourceMessage):
    message = SourceMessage(None, raw_bytes(message))
  return {
      'stream': _text(message.stream),
      'source': _text(message.source),
      'partition': _int(message.partition),
      'offset': _int(message.offset),
      'record_index': _int(record_index),
      'stage': stage,
      'error': _reason(error),
      'payload': raw_bytes(message) if payload is None else payload,
      'failed_at': utc_now(),
  }


def record_payload(record: Any) -> Optional[bytes]:
  """One record of a host array as JSON for its dead letter; None (then the row keeps the
  whole message's bytes) when it cannot be encoded, e.g. nested deeper than the encoder goes.
  """
  try:
    return orjson.dumps(record, default=str)
  except Exception:  # pylint: disable=broad-except
    return None


def dead_letter_counter(namespace: str, stream: str):
  """The Beam counter ``<namespace>/<stream>_dead_lettered`` (the job summary reads these)."""
  return Metrics.counter(namespace, f'{stream}_dead_lettered')


def batch_record_dead_letter(batch, position: int, stage: str, error: Any) -> dict[str, Any]:
  """The dead-letter row of one record of a :class:`transforms.batch.RecordBatch`: its whole
  message's bytes, or for a record of a host array that record as JSON. Never raises."""
  try:
    message, index = batch.messages[position], batch.record_indexes[position]
  except Exception:  # pylint: disable=broad-except
    return dead_letter_row(None, stage, error)
  payload = None
  if index is not None:
    try:
      payload = record_payload(batch.row(position))
    except Exception:  # pylint: disable=broad-except
      payload = None
  return dead_letter_row(message, stage, error, payload=payload, record_index=index)


def record_by_record(step: Callable, batch: RecordBatch, stage: str
                     ) -> tuple[RecordBatch, list[dict[str, Any]]]:
  """``step(batch) -> (RecordBatch, dead letters)``, guarded: if the vectorised step fails
  for the whole batch, it is retried one record at a time, and only a record that still
  fails is dead-lettered (stage ``stage``, the exception as its error). The retry costs a
  call per record, so it runs only after a failure, never on the hot path."""
  try:
    return step(batch)
  except Exception:  # pylint: disable=broad-except
    log.warning('%s failed for a batch of %d %s records; retrying them one by one', stage,
                len(batch), batch.stream, exc_info=True)
  kept, dead = [], []
  for position in range(len(batch)):
    try:
      one, letters = step(batch.take([position]))
      kept.append(one)
      dead.extend(letters)
    except Exception as e:  # pylint: disable=broad-except
      dead.append(batch_record_dead_letter(batch, position, stage, e))
  return RecordBatch.concat(batch.stream, kept), dead
