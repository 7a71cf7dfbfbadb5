"""ParseAndClean: raw message bytes to typed records, bad input to the dead-letter output."""

from __future__ import annotations

import functools
import logging
from typing import (Annotated, Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence,
                    Union)

import msgspec
import orjson

import apache_beam as beam
from apache_beam.metrics import Metrics

from schemas.limits import MAX_BATCH_RECORDS, MAX_MESSAGE_BYTES, MAX_RECORDS_PER_MESSAGE
from schemas.records import RecordSchema
from transforms.batch import RecordBatch
from transforms.cleaning import clean_records, record_struct
from transforms.dead_letter import (DEAD_LETTER, dead_letter_counter, dead_letter_row,
                                    record_payload)
from transforms.route import BatchByStream
from transforms.source import SourceMessage

PARSE_STAGE = 'parse'
CLEAN_STAGE = 'clean'
# Records scored per model call and written per Arrow table; see benchmarks/stages.py.
DEFAULT_BATCH_SIZE = 2000
# How long a batch may stay open while records trickle in: with the Flink job's
# data_buffer_time_limit_ms the records of a bundle reach the worker while it runs, and a
# batch scored only at the bundle's end would hold every alert of it back until then.
MAX_BATCH_WAIT_S = 0.01
log = logging.getLogger(__name__)


def decode_json(payload: bytes) -> Any:
  """Strict JSON from bytes: UTF-8 only, no NaN / Infinity, bounded size and nesting.

  orjson is strict where the standard library is lenient (NaN, Infinity, lone surrogates
  that no Parquet string could hold) and decodes several times faster. Its errors are
  ``ValueError``s; integers beyond 64 bits come back as floats, which cleaning range-checks.
  """
  if len(payload) > MAX_MESSAGE_BYTES:
    raise ValueError(f'message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}')
  return orjson.loads(payload)


@functools.lru_cache(maxsize=None)
def _typed_decoder(schema: RecordSchema) -> Callable[[bytes], Any]:
  """A JSON message of ``schema.stream`` -> its :func:`record_struct` (or a list of them),
  the types checked in C; raises for any message it does not read exactly as
  :func:`decode_json` would, which then takes the exact path."""
  record = record_struct(schema)
  if schema.is_array:
    record = Annotated[list[record], msgspec.Meta(max_length=MAX_RECORDS_PER_MESSAGE)]
  return msgspec.json.Decoder(record).decode


def _raw_record(raw: Any, message: SourceMessage, index: int, redecoded: dict) -> Any:
  """The record at ``index`` of a host message as :func:`decode_json` reads it: the typed
  decoder's struct is no copy of what came (its absent fields are None), so its dead letter
  carries the message's own record. Each message is decoded again at most once."""
  if isinstance(raw, msgspec.Struct):
    if id(message) not in redecoded:
      try:
        redecoded[id(message)] = decode_json(message.value or b'')
      except Exception:  # pylint: disable=broad-except
        redecoded[id(message)] = None  # then the row keeps the message's bytes
    decoded = redecoded[id(message)]
    return decoded[index] if isinstance(decoded, list) and index < len(decoded) else None
  return raw


def _clean_each(schema: RecordSchema, raws: Sequence[Any]
                ) -> tuple[dict[str, list], list[int], dict[int, str]]:
  """:func:`clean_records` one record at a time: after it failed for a whole chunk, only the
  record that makes it fail is refused, with the exception as its error."""
  columns: dict[str, list] = {}
  kept, errors = [], {}
  for position, raw in enumerate(raws):
    try:
      one, one_kept, one_errors = clean_records(schema, [raw])
    except Exception as e:  # pylint: disable=broad-except
      errors[position] = f'{type(e).__name__}: {e}'
      continue
    if one_errors:
      errors[position] = one_errors[0]
    elif one_kept:
      for name, values in one.items():
        columns.setdefault(name, []).extend(values)
      kept.append(position)
  return columns, kept, errors


def _clean_chunk(schema: RecordSchema, raws: list, owners: list, indexes: list,
                 dead: list) -> RecordBatch:
  try:
    columns, kept, errors = clean_records(schema, raws)
  except Exception:  # pylint: disable=broad-except
    log.warning('cleaning failed for a chunk of %d %s records; retrying them one by one',
                len(raws), schema.stream, exc_info=True)
    columns, kept, errors = _clean_each(schema, raws)
  redecoded = {}
  for position, error in sorted(errors.items()):
    index = indexes[position]
    payload = None if index is None else record_payload(
        _raw_record(raws[position], owners[position], index, redecoded))
    dead.append(dead_letter_row(owners[position], CLEAN_STAGE, error, payload=payload,
                                record_index=index))
  if not kept:
    return empty_batch(schema)
  return RecordBatch(schema.stream, columns, [owners[p] for p in kept],
                     [indexes[p] for p in kept])


_UNTYPED = object()
# A message's bytes -> a record (OBJECT streams) or a list of records (ARRAY streams); raises
# for bytes that are neither. decode_json, or transforms.avro_decode.AvroDecoder.
Decoder = Callable[[bytes], Any]


def parse_chunks(schema: RecordSchema, messages: Sequence[SourceMessage],
                 max_records: Optional[int] = MAX_BATCH_RECORDS,
                 decode: Decoder = decode_json
                 ) -> Iterator[tuple[RecordBatch, list[dict[str, Any]]]]:
  """Messages of ``schema.stream`` -> (the records that cleaned, dead-letter rows), one pair
  per chunk of about ``max_records`` records (host arrays add up; None: one chunk).

  A message of a ``payload=OBJECT`` stream (network) is one JSON object::

    {"duration": 0, "protocol_type": "tcp", "service": "http", ..., "uuid": "…", "utc": "…"}

  A message of a ``payload=ARRAY`` stream (process, memory) is a JSON array of records whose
  numbers arrive as messy strings::

    [{"machine": "7", "PID": " 312", "CMD": "kworker", "VSIZE": "1.5M", "ts": 1700000000, …}, …]

  A message that is not valid JSON of the right shape, or an array of more than
  ``MAX_RECORDS_PER_MESSAGE`` records, is dead-lettered whole (stage ``parse``, the message's
  bytes); a record that fails cleaning alone (stage ``clean``, the record's JSON when it came
  in an array). Whatever goes wrong for one message, it becomes that message's dead letter.
  ``decode`` reads other formats into the same shapes (Avro: transforms/avro_decode.py).
  """
  is_array = schema.is_array
  # JSON messages first go through the typed decoder (msgspec): a message it reads needs no
  # dict per record nor a type check per value; one it refuses is decoded again the exact way
  # (orjson), so each message's outcome and dead letter are what that way gives.
  typed = _typed_decoder(schema) if decode is decode_json else None
  dead: list[dict[str, Any]] = []
  raws, owners, indexes = [], [], []
  for message in messages:
    try:
      value, decoded = message.value or b'', _UNTYPED
      if typed is not None and len(value) <= MAX_MESSAGE_BYTES:
        try:
          decoded = typed(value)
        except Exception:  # pylint: disable=broad-except
          pass
      if decoded is _UNTYPED:
        decoded = decode(value)
      if not is_array:
        raws.append(decoded)
        owners.append(message)
        indexes.append(None)
      elif not isinstance(decoded, list):
        dead.append(dead_letter_row(
            message, PARSE_STAGE,
            f'expected a JSON array of {schema.stream} records, got {type(decoded).__name__}'))
      elif len(decoded) > MAX_RECORDS_PER_MESSAGE:
        dead.append(dead_letter_row(
            message, PARSE_STAGE, f'array of {len(decoded)} records exceeds '
            f'{MAX_RECORDS_PER_MESSAGE} records per message'))
      else:
        raws.extend(decoded)
        owners.extend([message] * len(decoded))
        indexes.extend(range(len(decoded)))
    except Exception as e:  # pylint: disable=broad-except
      # orjson's JSONDecodeError, bad UTF-8 and too deep nesting included; and whatever
      # else one message could raise.
      dead.append(dead_letter_row(message, PARSE_STAGE, e))
    if max_records is not None and len(raws) >= max_records:
      yield _clean_chunk(schema, raws, owners, indexes, dead), dead
      dead, raws, owners, indexes = [], [], [], []
  if raws or dead:
    yield _clean_chunk(schema, raws, owners, indexes, dead), dead


def parse_messages(schema: RecordSchema, messages: Sequence[SourceMessage]
                   ) -> tuple[RecordBatch, list[dict[str, Any]]]:
  """:func:`parse_chunks` as one batch (for callers outside Beam: benchmarks, fuzzers)."""
  chunks = list(parse_chunks(schema, messages, max_records=None))
  dead = [row for _, letters in chunks for row in letters]
  batches = [batch for batch, _ in chunks if len(batch)]
  return (RecordBatch.concat(schema.stream, batches) if batches else empty_batch(schema)), dead


def empty_batch(schema: RecordSchema) -> RecordBatch:
  """A batch of no records, with the columns of a cleaned one."""
  return RecordBatch(schema.stream, clean_records(schema, [])[0], [], [])


class ParseAndCleanFn(beam.DoFn):
  """A list of messages -> one :class:`RecordBatch`, and a dead-letter row for each message or
  record that failed (see :func:`parse_messages`)."""

  def __init__(self, schema: RecordSchema, decode: Optional[Decoder] = None):
    self._schema = schema
    self._decode = decode or decode_json
    self._messages = Metrics.counter('ParseAndClean', f'{schema.stream}_messages')
    self._cleaned = Metrics.counter('ParseAndClean', f'{schema.stream}_cleaned')
    self._dead = dead_letter_counter('ParseAndClean', schema.stream)

  def process(self, messages: list[SourceMessage]):
    self._messages.inc(len(messages))
    try:
      chunks = list(parse_chunks(self._schema, messages, decode=self._decode))
    except Exception:  # pylint: disable=broad-except
      chunks = self._message_by_message(messages)
    for batch, dead in chunks:
      self._dead.inc(len(dead))
      for row in dead:
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, row)
      if len(batch):
        self._cleaned.inc(len(batch))
        yield batch

  def _message_by_message(self, messages: list[SourceMessage]):
    """The last resort, after parsing failed for a whole batch: each message alone, and a
    message that still fails is one dead letter."""
    log.warning('parsing failed for a batch of %d %s messages; retrying them one by one',
                len(messages), self._schema.stream, exc_info=True)
    chunks = []
    for message in messages:
      try:
        chunks.extend(parse_chunks(self._schema, [message], decode=self._decode))
      except Exception as e:  # pylint: disable=broad-except
        chunks.append((empty_batch(self._schema), [dead_letter_row(message, PARSE_STAGE, e)]))
    return chunks


class ParseBatches(beam.PTransform):
  """Lists of SourceMessages of one stream (as :class:`BatchByStream` emits them) ->
  RecordBatches (``result['records']``), plus ``DEAD_LETTER`` rows. The per-stream step of
  :class:`ParseAndClean`."""

  def __init__(self, schema: RecordSchema, decode: Optional[Decoder] = None):
    super().__init__(label=f'Parse[{schema.stream}]')
    self._schema = schema
    self._decode = decode

  def expand(self, batches):
    return batches | 'Parse' >> beam.ParDo(
        ParseAndCleanFn(self._schema, self._decode)).with_output_types(
        RecordBatch).with_outputs(DEAD_LETTER, main='records')


class ParseAndClean(beam.PTransform):
  """PCollection[SourceMessage] of the streams of ``schemas`` (one schema or several) ->
  RecordBatches per stream, plus ``DEAD_LETTER`` rows.

  Two steps: :class:`BatchByStream` routes the messages by stream and batches them within each
  bundle, up to ``batch_size`` per batch (the batch is what the model scores in one call and
  what the archive writes as one table), or what came within ``max_batch_wait_s`` while the
  bundle runs; then :class:`ParseBatches` parses and cleans each
  stream's batches. A message of a stream not in ``schemas`` is dead-lettered (stage
  ``route``). Returns ``result[stream]``, the batches of each stream, and
  ``result[DEAD_LETTER]``, every dead letter of both steps. ``decoders``: stream -> the
  :data:`Decoder` of a stream whose messages are not JSON.
  """

  def __init__(self, schemas: Union[RecordSchema, Iterable[RecordSchema]],
               batch_size: int = DEFAULT_BATCH_SIZE,
               decoders: Optional[Mapping[str, Decoder]] = None,
               max_batch_wait_s: Optional[float] = MAX_BATCH_WAIT_S):
    self._schemas = (schemas,) if isinstance(schemas, RecordSchema) else tuple(schemas)
    super().__init__(label='ParseAndClean' if len(self._schemas) > 1
                     else f'ParseAndClean[{self._schemas[0].stream}]')
    self._batch_size = batch_size
    self._decoders = dict(decoders or {})
    self._max_batch_wait_s = max_batch_wait_s

  def expand(self, messages):
    batches = messages | 'ByStream' >> BatchByStream(
        [schema.stream for schema in self._schemas], self._batch_size,
        max_wait_s=self._max_batch_wait_s)
    outputs, dead = {}, [batches[DEAD_LETTER]]
    for schema in self._schemas:
      parsed = batches[schema.stream] | ParseBatches(
          schema, self._decoders.get(schema.stream))
      outputs[schema.stream] = parsed['records']
      dead.append(parsed[DEAD_LETTER])
    outputs[DEAD_LETTER] = dead | 'AllDeadLetters' >> beam.Flatten()
    return outputs
