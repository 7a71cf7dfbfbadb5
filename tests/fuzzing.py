"""The fuzzing harness of the stream job's stages, shared by tests/test_fuzz_parse.py,
tests/test_hostile_messages.py and the atheris fuzzer (tests/fuzz_parse_atheris.py):
:func:`run_stages` calls the job's own DoFns and functions the way the runner calls them,
without a runner, and :func:`check` asserts the property (every input exactly once, archived
or dead-lettered with its bytes; see tests/test_fuzz_parse.py)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import math
import re
import time
from typing import Any, Optional, Sequence

import orjson
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from model import registry
from schemas.records import SCHEMAS
from transforms.dead_letter import DEAD_LETTER, MAX_ERROR_LENGTH
from transforms.enrich import EnrichFn, EventTimeBounds
from transforms.inference import _failed_batch_to_dead_letters, score_batch
from transforms.parquet_sink import event_date
from transforms.parse import DEFAULT_BATCH_SIZE, ParseAndCleanFn
from transforms.route import _BatchByStreamFn
from transforms.source import SourceMessage

STREAMS = tuple(SCHEMAS)
STAGES = {'route', 'parse', 'clean', 'enrich', 'inference'}
BOUNDS = EventTimeBounds()  # the product's defaults
DATE = re.compile(r'^\d{4}-\d{2}-\d{2}$')


@dataclasses.dataclass
class Outcome:
  archived: dict[str, list]  # stream -> scored RecordBatches
  dead: list[dict[str, Any]]


def load_models(model_dir: str) -> dict[str, registry.LoadedModel]:
  return {stream: registry.load_for_serving(model_dir, stream) for stream in STREAMS}


def _split(outputs, main: list, dead: list) -> None:
  for output in outputs:
    if isinstance(output, TaggedOutput):
      value = output.value.value if isinstance(output.value, WindowedValue) else output.value
      (dead if output.tag == DEAD_LETTER else main).append((output.tag, value))
    else:
      main.append((None, output))


def run_stages(messages: Sequence[Any], models: dict, bounds: EventTimeBounds = BOUNDS,
               batch_size: int = DEFAULT_BATCH_SIZE) -> Outcome:
  """``messages`` (SourceMessages, or anything a broken source might emit) through
  DetectAttacks' per-message path: BatchByStream, ParseAndClean, Enrich and scoring, with the
  failed-batch dead letters Score makes when the model raises."""
  routed, dead = [], []
  router = _BatchByStreamFn(STREAMS, batch_size)
  router.start_bundle()
  for message in messages:
    _split(router.process(message), routed, dead)
  _split(router.finish_bundle(), routed, dead)
  archived = collections.defaultdict(list)
  fns = {s: (ParseAndCleanFn(SCHEMAS[s]), EnrichFn(SCHEMAS[s], 'fuzz', bounds)) for s in STREAMS}
  for stream, batch in routed:
    parse, enrich = fns[stream]
    parsed = []
    _split(parse.process(batch), parsed, dead)
    for _, records in parsed:
      enriched = []
      _split(enrich.process(records), enriched, dead)
      for _, ready in enriched:
        try:
          archived[stream].append(score_batch(SCHEMAS[stream], models[stream], ready))
        except Exception as e:  # pylint: disable=broad-except  # RunInference's handling
          dead += [(DEAD_LETTER, row) for row in
                   _failed_batch_to_dead_letters(stream)(([ready], e))]
  return Outcome(dict(archived), [row for _, row in dead])


# ---- the property -----------------------------------------------------------------------------

def host_record_count(message: SourceMessage) -> Optional[int]:
  """How many records a host message holds, None if it is no JSON array."""
  try:
    decoded = orjson.loads(message.value)
  except (orjson.JSONDecodeError, TypeError):
    return None
  return len(decoded) if isinstance(decoded, list) else None


def check(messages: Sequence[Any], archived_rows: list[tuple[str, SourceMessage, Optional[int],
                                                               dict]],
          dead: list[dict], window: tuple[datetime.datetime, datetime.datetime]) -> None:
  """Every input exactly once, archived or dead-lettered with its bytes; see the module
  docstring. ``archived_rows``: (stream, message, record index, row) per archived record."""
  messages_by_key = {}
  for m in messages:
    if isinstance(m, SourceMessage) and m.stream in STREAMS:
      messages_by_key[(m.stream, m.offset)] = m
  outcomes = collections.Counter()
  ids = collections.defaultdict(set)
  earliest, latest = window
  dates = set()
  for stream, message, index, row in archived_rows:
    numbers = [v for v in row.values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers), f'a non-finite number was archived: {row}'
    assert earliest <= row['event_time'] <= latest, f'event time out of bounds: {row}'
    dates.add(event_date(row['event_time']))
    assert row['prediction'] in (0, 1) and 0 <= row['score'] <= 1
    ids[row['record_id']].add((stream, message.value, index))
    outcomes[(stream, message.offset, index)] += 1
  assert all(DATE.match(d) for d in dates), dates
  days = (BOUNDS.max_age_s + BOUNDS.max_lead_s) / 86400
  assert len(dates) <= math.ceil(days) + 1, f'{len(dates)} dt= folders from one batch'
  assert all(len(records) == 1 for records in ids.values()), 'two records share a record id'
  unrouted, decoded = 0, {}
  for row in dead:
    assert row['stage'] in STAGES, row['stage']
    assert isinstance(row['payload'], bytes) and len(row['error']) <= MAX_ERROR_LENGTH
    message = messages_by_key.get((row['stream'], row['offset']))
    if message is None:
      assert row['stage'] == 'route', row
      unrouted += 1
      continue
    if row['record_index'] is None:
      assert row['payload'] == message.value, 'a dead-lettered message keeps its raw bytes'
    elif row['payload'] != message.value:  # else: the record could not be re-encoded alone
      record = orjson.loads(row['payload'])
      if row['stage'] == 'clean':
        if message.offset not in decoded:
          decoded[message.offset] = orjson.loads(message.value)
        assert record == decoded[message.offset][row['record_index']]
      else:
        assert isinstance(record, dict), 'a later stage keeps the cleaned record'
    outcomes[(row['stream'], row['offset'], row['record_index'])] += 1
  assert unrouted == len(messages) - len(messages_by_key), 'an unroutable input vanished'
  assert all(n == 1 for n in outcomes.values()), [k for k, n in outcomes.items() if n > 1]
  for (stream, offset), message in messages_by_key.items():
    mine = {i for (s, o, i) in outcomes if (s, o) == (stream, offset)}
    if not SCHEMAS[stream].is_array or mine == {None}:
      assert mine == {None}, f'message {message.value[:60]!r} vanished'
    else:
      # A host array: each of its records exactly once, archived or dead-lettered alone.
      assert mine == set(range(host_record_count(message) or 0)), message.value[:60]


def archived_rows(outcome: Outcome):
  return [(stream, m, i, row) for stream, batches in outcome.archived.items()
          for batch in batches
          for m, i, row in zip(batch.messages, batch.record_indexes, batch.rows())]


def run_and_check(messages: Sequence[Any], models: dict) -> Outcome:
  before = datetime.datetime.now(datetime.timezone.utc)
  outcome = run_stages(messages, models)
  after = datetime.datetime.now(datetime.timezone.utc)
  check(messages, archived_rows(outcome), outcome.dead,
        (BOUNDS.window(before)[0], BOUNDS.window(after)[1]))
  return outcome


def now_s() -> int:
  return int(time.time())


def iso(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def nested(depth: int, inner: bytes = b'1', as_object: bool = False) -> bytes:
  opener, closer = (b'{"a":', b'}') if as_object else (b'[', b']')
  return opener * depth + inner + closer * depth
