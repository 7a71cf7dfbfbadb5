"""ParseAndClean: raw message bytes to typed records, bad input to the dead-letter output."""

from __future__ import annotations

import json
from typing import Any, Sequence

import orjson

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.records import RecordSchema
from transforms.batch import RecordBatch
from transforms.cleaning import clean_records
from transforms.dead_letter import DEAD_LETTER, dead_letter_counter, dead_letter_row
from transforms.route import BatchByStream
from transforms.source import SourceMessage

PARSE_STAGE = 'parse'
CLEAN_STAGE = 'clean'
# A hostile message must not cost unbounded memory or time in json.loads.
MAX_MESSAGE_BYTES = 1 << 20
# Records scored per model call and written per Arrow table; see benchmarks/stages.py.
DEFAULT_BATCH_SIZE = 2000


def decode_json(payload: bytes) -> Any:
  """Strict JSON from bytes: UTF-8 only, no NaN / Infinity, bounded size and nesting.

  orjson is strict where the standard library is lenient (NaN, Infinity, lone surrogates
  that no Parquet string could hold) and decodes several times faster. Its errors are
  ``ValueError``s; integers beyond 64 bits come back as floats, which cleaning range-checks.
  """
  if len(payload) > MAX_MESSAGE_BYTES:
    raise ValueError(f'message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}')
  return orjson.loads(payload)


def parse_messages(schema: RecordSchema, messages: Sequence[SourceMessage]
                   ) -> tuple[RecordBatch, list[dict[str, Any]]]:
  """Messages of ``schema.stream`` -> (the records that cleaned, dead-letter rows).

  A network message is one JSON object::

    {"duration": 0, "protocol_type": "tcp", "service": "http", ..., "uuid": "…", "utc": "…"}

  A host message is a JSON array of records whose numbers arrive as messy strings::

    [{"machine": "7", "PID": " 312", "CMD": "kworker", "VSIZE": "1.5M", "ts": 1700000000, …}, …]

  A message that is not valid JSON of the right shape is dead-lettered whole (stage
  ``parse``, the message's bytes); a record that fails cleaning alone (stage ``clean``, the
  record's JSON when it came in an array).
  """
  is_array = schema.stream != 'network'
  dead = []
  raws, owners, indexes = [], [], []
  for message in messages:
    try:
      decoded = decode_json(message.value or b'')
    except ValueError as e:
      # orjson's JSONDecodeError, bad UTF-8 and too deep nesting included.
      dead.append(dead_letter_row(message, PARSE_STAGE, e))
      continue
    if not is_array:
      raws.append(decoded)
      owners.append(message)
      indexes.append(None)
    elif isinstance(decoded, list):
      raws.extend(decoded)
      owners.extend([message] * len(decoded))
      indexes.extend(range(len(decoded)))
    else:
      dead.append(dead_letter_row(
          message, PARSE_STAGE,
          f'expected a JSON array of {schema.stream} records, got {type(decoded).__name__}'))
  columns, kept, errors = clean_records(schema, raws)
  for position, error in sorted(errors.items()):
    index = indexes[position]
    payload = None if index is None else json.dumps(raws[position]).encode('utf-8')
    dead.append(dead_letter_row(owners[position], CLEAN_STAGE, error, payload=payload,
                                record_index=index))
  batch = RecordBatch(schema.stream, columns, [owners[p] for p in kept],
                      [indexes[p] for p in kept])
  return batch, dead


class ParseAndCleanFn(beam.DoFn):
  """A list of messages -> one :class:`RecordBatch`, and a dead-letter row for each message or
  record that failed (see :func:`parse_messages`)."""

  def __init__(self, schema: RecordSchema):
    self._schema = schema
    self._messages = Metrics.counter('ParseAndClean', f'{schema.stream}_messages')
    self._cleaned = Metrics.counter('ParseAndClean', f'{schema.stream}_cleaned')
    self._dead = dead_letter_counter('ParseAndClean', schema.stream)

  def process(self, messages: list[SourceMessage]):
    batch, dead = parse_messages(self._schema, messages)
    self._messages.inc(len(messages))
    self._dead.inc(len(dead))
    for row in dead:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, row)
    if len(batch):
      self._cleaned.inc(len(batch))
      yield batch


class ParseBatches(beam.PTransform):
  """Lists of SourceMessages of one stream (as :class:`BatchByStream` emits them) ->
  RecordBatches (``result['records']``), plus ``DEAD_LETTER`` rows."""

  def __init__(self, schema: RecordSchema):
    super().__init__(label=f'ParseAndClean[{schema.stream}]')
    self._schema = schema

  def expand(self, batches):
    return batches | 'Parse' >> beam.ParDo(ParseAndCleanFn(self._schema)).with_output_types(
        RecordBatch).with_outputs(DEAD_LETTER, main='records')


class ParseAndClean(beam.PTransform):
  """PCollection[SourceMessage] of one stream -> RecordBatches, plus ``DEAD_LETTER`` rows.

  Messages are batched within each bundle, up to ``batch_size`` per batch: the batch is what
  the model scores in one call and what the archive writes as one table. A message of another
  stream is dead-lettered. Returns ``result['records']``, the batches, and
  ``result[DEAD_LETTER]``, the dead letters. (DetectAttacks batches all streams in one step,
  then runs :class:`ParseBatches` per stream.)
  """

  def __init__(self, schema: RecordSchema, batch_size: int = DEFAULT_BATCH_SIZE):
    super().__init__(label=f'ParseAndClean[{schema.stream}]')
    self._schema = schema
    self._batch_size = batch_size

  def expand(self, messages):
    batches = messages | 'Batch' >> BatchByStream([self._schema.stream], self._batch_size)
    parsed = batches[self._schema.stream] | 'Parse' >> ParseBatches(self._schema)
    dead = ((batches[DEAD_LETTER], parsed[DEAD_LETTER])
            | 'AllDeadLetters' >> beam.Flatten())
    return {'records': parsed['records'], DEAD_LETTER: dead}
