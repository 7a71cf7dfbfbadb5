"""ParseAndClean: raw message bytes to typed records, bad input to the dead-letter output."""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.records import RecordSchema
from transforms.cleaning import CleaningError, clean_record
from transforms.dead_letter import DEAD_LETTER, DeadLetterCounter, dead_letter_row
from transforms.source import SourceMessage

PARSE_STAGE = 'parse'
CLEAN_STAGE = 'clean'
# A hostile message must not cost unbounded memory or time in json.loads.
MAX_MESSAGE_BYTES = 1 << 20


class CleanRecord(NamedTuple):
  """A cleaned record and where it came from (for uuids, event time and dead letters)."""
  record: dict[str, Any]
  message: SourceMessage  # the whole message: its value is the raw payload of a dead letter
  record_index: Optional[int] = None  # position in a host JSON array


def _reject_constant(name: str):
  # json.loads accepts NaN and Infinity, which are not JSON and not meaningful measurements.
  raise ValueError(f'{name} is not valid JSON')


def decode_json(payload: bytes) -> Any:
  """Strict JSON from bytes: UTF-8 only, no NaN / Infinity, bounded size."""
  if len(payload) > MAX_MESSAGE_BYTES:
    raise ValueError(f'message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}')
  return json.loads(payload.decode('utf-8'), parse_constant=_reject_constant)


class ParseAndCleanFn(beam.DoFn):
  """Parses one message of ``schema.stream`` and cleans each record in it.

  A network message is one JSON object::

    {"duration": 0, "protocol_type": "tcp", "service": "http", ..., "uuid": "…", "utc": "…"}

  A host message is a JSON array of records whose numbers arrive as messy strings::

    [{"machine": "7", "PID": " 312", "CMD": "kworker", "VSIZE": "1.5M", "ts": 1700000000, …}, …]

  Output: :class:`CleanRecord` on the main output; a dead-letter row on ``DEAD_LETTER`` for a
  message that is not valid JSON of the right shape (stage ``parse``, the message's bytes) or
  for each record that fails cleaning (stage ``clean``, that record's JSON).
  """

  def __init__(self, schema: RecordSchema, is_array: bool):
    self._schema = schema
    self._is_array = is_array
    self._messages = Metrics.counter('ParseAndClean', f'{schema.stream}_messages')
    self._cleaned = Metrics.counter('ParseAndClean', f'{schema.stream}_cleaned')
    self._dead = DeadLetterCounter('ParseAndClean')

  def process(self, message: SourceMessage):
    self._messages.inc()
    try:
      decoded = decode_json(message.value or b'')
    except (ValueError, RecursionError) as e:
      # UnicodeDecodeError and JSONDecodeError are ValueErrors; deep nesting is RecursionError.
      self._dead.inc(self._schema.stream)
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_row(message, PARSE_STAGE, e))
      return
    if self._is_array:
      if not isinstance(decoded, list):
        self._dead.inc(self._schema.stream)
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_row(
            message, PARSE_STAGE,
            f'expected a JSON array of {self._schema.stream} records, got '
            f'{type(decoded).__name__}'))
        return
      records = enumerate(decoded)
    else:
      records = [(None, decoded)]
    for index, raw in records:
      try:
        cleaned = clean_record(self._schema, raw)
      except CleaningError as e:
        self._dead.inc(self._schema.stream)
        payload = None if index is None else json.dumps(raw).encode('utf-8')
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_row(
            message, CLEAN_STAGE, str(e), payload=payload, record_index=index))
        continue
      self._cleaned.inc()
      yield CleanRecord(cleaned, message, index)


class ParseAndClean(beam.PTransform):
  """PCollection[SourceMessage] of one stream -> CleanRecords, plus ``DEAD_LETTER``.

  Returns a ``DoOutputsTuple``: ``result['records']`` is the records and ``result[DEAD_LETTER]``
  the dead letters.
  """

  def __init__(self, schema: RecordSchema):
    super().__init__(label=f'ParseAndClean[{schema.stream}]')
    self._schema = schema

  def expand(self, messages):
    is_array = self._schema.stream != 'network'
    return messages | beam.ParDo(ParseAndCleanFn(self._schema, is_array)).with_outputs(
        DEAD_LETTER, main='records')
