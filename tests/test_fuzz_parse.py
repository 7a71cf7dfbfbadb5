"""Hostile input through every stage of the stream job: route (BatchByStream), parse, clean,
enrich, score (with the test registry's models) and the archive's partition names. Random
bytes, deep nesting, huge numbers, NaN / Infinity, wrong types, very long strings and arrays,
calendar-edge and far-apart times, Kafka timestamps of -1, repeated uuids, empty records, and
elements that are not messages at all.

Whatever arrives, nothing escapes as an exception, every input ends up exactly once either
as an archived (scored) record or as a dead letter carrying its raw payload, no archived record
holds a non-finite number or an event time outside the bounds, partition names are always
``YYYY-MM-DD``, and no two different records share a record id. Crafted long inputs are each
processed within a time budget.

:func:`run_stages` (tests/fuzzing.py) calls the job's own DoFns and functions the way the runner calls them,
without a runner, so hypothesis can try hundreds of batches; one test runs the same property
through DetectAttacks on the DirectRunner, and the atheris fuzzer (tests/fuzz_parse_atheris.py)
drives :func:`run_stages` with coverage-guided mutations.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.layout import ARCHIVE, DEAD_LETTERS
from schemas.limits import MAX_RECORDS_PER_MESSAGE
from schemas.records import SCHEMAS
from tests.factories import memory_record, network_record, process_record
from tests.fuzzing import (BOUNDS, STREAMS, archived_rows, check, host_record_count, iso,
                           load_models, nested, now_s, run_and_check, run_stages)
from transforms.detect import DetectAttacks
from transforms.source import SourceMessage

# Per input: a fixed share (one model call of a one-record batch is most of it) plus a share
# per record it holds; in CPU time, the least of a few runs.
BUDGET_S, BUDGET_PER_RECORD_S = 0.050, 0.000_050

# No shrinking: the failing batch is printed whole.
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GRAPH_SETTINGS = settings(SETTINGS, max_examples=3)


# ---- the stages, without a runner ------------------------------------------------------------

# ---- hostile inputs ---------------------------------------------------------------------------

# Values that have broken parsers: out-of-range and non-finite numbers, wrong types, big ones.
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**308, 1e308, -1e308, 5e-324, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.sampled_from(['NaN', 'nan', 'Infinity', '-inf', '1e400', ' 1.5K', '12M', '-3K', '40%',
                     '-', '', '1_000', '0x10', '１２', '\u0000', 'é', 'x' * 5000,
                     '1' * 5000 + 'x', '9' * 70, '1.' + '5' * 3000 + 'Q']),
    st.lists(st.integers(), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=3))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
# Times at the calendar's edges, across years, and beside the bounds.
EDGE_UTC = ['0001-01-01T00:00:00+14:00', '9999-12-31T23:59:59-14:00', '0001-01-01T00:00:00',
            '9999-12-31T23:59:59.999999', '0997-08-07T00:00:00Z', '1969-12-31T23:59:59Z',
            '2999-01-01T00:00:00Z', '2024-02-30T00:00:00Z', '24:00', 'T', '']
EDGE_TS = [-62135596800, -62135596801, 253402300799, 253402300800, -1, 0, 2**62, -(2**62),
           1e18]
UNKNOWN_ELEMENTS = [None, 42, b'raw bytes', ('network', b'{}'), {'stream': 'network'}]


def _times(draw) -> dict:
  """Event-time fields of a record: mostly now, sometimes near the bounds or far away."""
  kind = draw(st.sampled_from(['now', 'now', 'now', 'near', 'far', 'edge']))
  if kind == 'now':
    return {'offset_s': draw(st.integers(-3600, 60))}
  if kind == 'near':
    return {'offset_s': draw(st.sampled_from([-BOUNDS.max_age_s - 60, -BOUNDS.max_age_s + 60,
                                               BOUNDS.max_lead_s - 30, BOUNDS.max_lead_s + 60]))}
  if kind == 'far':
    return {'offset_s': draw(st.sampled_from([-86400 * 365 * 30, 86400 * 365 * 500,
                                               -86400 * 3, 86400 * 40]))}
  return {'edge': draw(st.integers(0, 99))}


def _network(draw, i: int) -> dict:
  record = network_record(i, attack=draw(st.booleans()))
  when = _times(draw)
  record['utc'] = (EDGE_UTC[when['edge'] % len(EDGE_UTC)] if 'edge' in when
                   else iso(now_s() + when['offset_s']))
  if draw(st.booleans()):
    record['uuid'] = 'same-uuid'  # a producer reusing one uuid for different records
  for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
    record[name] = draw(HOSTILE_VALUES)
  return record


def _host(draw, factory) -> dict:
  when = _times(draw)
  ts = EDGE_TS[when['edge'] % len(EDGE_TS)] if 'edge' in when else now_s() + when['offset_s']
  record = factory(draw(st.integers(0, 9)), draw(st.integers(1, 99999)), 'cmd', ts,
                   draw(st.booleans()))
  for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
    record[name] = draw(HOSTILE_VALUES)
  return record


def _dumps(value) -> bytes:
  # json.dumps writes NaN / Infinity tokens for non-finite floats: exactly the hostile case.
  return json.dumps(value).encode('utf-8')


@st.composite
def payloads(draw, stream: str) -> bytes:
  kind = draw(st.sampled_from(['bytes', 'json', 'mutated', 'mutated', 'mutated', 'nested',
                               'nested_record', 'number', 'long', 'empty', 'many']))
  if kind == 'bytes':
    return draw(st.binary(max_size=300))
  if kind == 'json':
    return _dumps(draw(JSON_VALUES))
  if kind == 'nested':
    return nested(draw(st.sampled_from([100, 1000, 1023, 5000, 100_000])),
                  as_object=draw(st.booleans()))
  if kind == 'nested_record':
    # Accepted by the decoder (under its 1024 levels), too deep to re-encode for a dead letter.
    depth = draw(st.sampled_from([200, 300, 1000]))
    field = b'{"machine": "1", "PID": "2", "CMD": "c", "ts": 1, "VSIZE": ' + nested(depth) + b'}'
    return b'[' + field + b',' + field + b']' if SCHEMAS[stream].is_array else field
  if kind == 'number':
    digits = draw(st.sampled_from([20, 400, 5000]))
    return b'{"duration": 1' + b'0' * digits + b'}'
  if kind == 'long':
    if draw(st.booleans()):
      return _dumps({**network_record(1), 'service': 'x' * draw(st.sampled_from([5000, 10**6]))})
    return _dumps(list(range(draw(st.sampled_from([10_000, 300_000])))))
  if kind == 'empty':
    return draw(st.sampled_from([b'{}', b'[]', b'[{}]', b'{"uuid": "u", "utc": "2024-01-01"}',
                                 _dumps({'protocol_type': 'tcp', 'utc': iso(now_s())})]))
  if kind == 'many':
    count = draw(st.sampled_from([MAX_RECORDS_PER_MESSAGE, MAX_RECORDS_PER_MESSAGE + 1]))
    return b'[' + b','.join([b'{"PID": "x"}'] * count) + b']'
  if not SCHEMAS[stream].is_array:
    return _dumps(_network(draw, draw(st.integers(0, 999))))
  factory = process_record if stream == 'process' else memory_record
  return _dumps([_host(draw, factory) for _ in range(draw(st.integers(0, 4)))])


@st.composite
def hostile_messages(draw, max_size: int = 40) -> list:
  """A batch of messages of all streams, a few of unknown streams or not messages at all."""
  out = []
  for offset in range(draw(st.integers(1, max_size))):
    kind = draw(st.sampled_from(STREAMS * 6 + ('unknown', 'not a message')))
    if kind == 'not a message':
      out.append(draw(st.sampled_from(UNKNOWN_ELEMENTS)))
      continue
    stream = draw(st.sampled_from(STREAMS)) if kind == 'unknown' else kind
    value = draw(payloads(stream))
    timestamp_ms = draw(st.sampled_from([None, -1, 0, now_s() * 1000, 2**62]))
    out.append(SourceMessage('dns' if kind == 'unknown' else stream, value,
                             source=f'fuzz-{stream}', partition=0, offset=offset,
                             timestamp_ms=timestamp_ms))
  return out


# ---- tests --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def models(model_dir):
  return load_models(model_dir)


def test_hostile_messages_through_every_stage(models):

  @SETTINGS
  @given(hostile_messages())
  def property_holds(messages):
    run_and_check(messages, models)

  property_holds()


def test_hostile_messages_through_the_detection_graph(model_dir):
  """The same property through DetectAttacks on the DirectRunner: the graph's own wiring."""

  @GRAPH_SETTINGS
  @given(hostile_messages(max_size=25))
  def property_holds(messages):
    before = datetime.datetime.now(datetime.timezone.utc)
    pipeline = TestPipeline()
    outputs = pipeline | beam.Create(messages, reshuffle=False) | DetectAttacks(model_dir)
    tagged = [outputs[ARCHIVE.format(s)] | f'Tag{s}' >> beam.Map(lambda b, s=s: (s, b))
              for s in STREAMS]
    tagged.append(outputs[DEAD_LETTERS] | 'TagDead' >> beam.Map(lambda r: ('dead', r)))

    def verify(elements):
      rows = [(tag, m, i, row) for tag, batch in elements if tag != 'dead'
              for m, i, row in zip(batch.messages, batch.record_indexes, batch.rows())]
      after = datetime.datetime.now(datetime.timezone.utc)
      check(messages, rows, [row for tag, row in elements if tag == 'dead'],
            (BOUNDS.window(before)[0], BOUNDS.window(after)[1]))
    assert_that(tagged | beam.Flatten(), verify)
    pipeline.run().wait_until_finish()

  property_holds()


def test_the_property_fails_when_a_message_vanishes():
  """The check is not vacuous: a message with no outcome at all is caught."""
  messages = [SourceMessage('network', b'{}', source='fuzz-network', partition=0, offset=0)]
  now = datetime.datetime.now(datetime.timezone.utc)
  with pytest.raises(AssertionError, match='vanished'):
    check(messages, [], [], BOUNDS.window(now))


def test_the_property_fails_when_two_records_share_an_id(models):
  """...and two different records with one record id are caught too."""
  records = [network_record(i, utc=iso(now_s())) for i in range(2)]
  messages = [SourceMessage('network', _dumps(r), 'fuzz', 0, i) for i, r in enumerate(records)]
  outcome = run_stages(messages, models)
  rows = archived_rows(outcome)
  assert len(rows) == 2
  rows[1][3]['record_id'] = rows[0][3]['record_id']
  now = datetime.datetime.now(datetime.timezone.utc)
  with pytest.raises(AssertionError, match='share a record id'):
    check(messages, rows, outcome.dead, (BOUNDS.window(now)[0], BOUNDS.window(now)[1]))


def crafted_long_inputs() -> list[tuple[str, SourceMessage]]:
  """Inputs built to cost CPU or memory, each at most MAX_MESSAGE_BYTES."""
  now = now_s()
  network = network_record(1, utc=iso(now))
  process = process_record(1, 2, 'c', now, False)
  digits = '1' * 500_000 + 'x'
  cases = {
      'network number as 500k digits': ('network', {**network, 'src_bytes': digits}),
      'network rate as 500k digits': ('network', {**network, 'serror_rate': '0.' + digits}),
      'network 1 MiB string': ('network', {**network, 'service': 'y' * 1_000_000}),
      'network 1 MiB uuid': ('network', {**network, 'uuid': 'u' * 1_000_000}),
      'network 1 MiB utc': ('network', {**network, 'utc': '2' * 1_000_000}),
      'network 100k keys': ('network', {**network, **{f'k{i}': i for i in range(60_000)}}),
      'network nested 1023': ('network', None),
      'host number as 500k digits': ('process', [{**process, 'CPU': digits}]),
      'host 1 MiB command': ('process', [{**process, 'CMD': 'z' * 1_000_000}]),
      'host 10,001 records': ('process', [{}] * (MAX_RECORDS_PER_MESSAGE + 1)),
      'host 10,000 bad records': ('memory', [{'PID': '1' * 60 + 'x'}] * MAX_RECORDS_PER_MESSAGE),
      'host 200k numbers': ('memory', list(range(200_000))),
      'host times across millennia': ('process', [
          {**process, 'ts': ts} for ts in range(-62135596800, 253402300799, 10**9 * 7)]),
  }
  out = []
  for offset, (name, (stream, payload)) in enumerate(cases.items()):
    value = nested(1023) if payload is None else _dumps(payload)
    out.append((name, SourceMessage(stream, value, 'crafted', 0, offset, now * 1000)))
  return out


@pytest.mark.parametrize('name,message', crafted_long_inputs(), ids=lambda v: v
                         if isinstance(v, str) else '')
def test_each_crafted_input_is_processed_within_its_time_budget(models, name, message):
  run_and_check([message], models)  # the property, once
  records = host_record_count(message) if SCHEMAS[message.stream].is_array else 1
  budget = BUDGET_S + BUDGET_PER_RECORD_S * min(records or 1, MAX_RECORDS_PER_MESSAGE)
  fastest = math.inf
  for _ in range(3):
    started = time.process_time()  # CPU time: other processes on the machine do not count
    run_stages([message], models)
    fastest = min(fastest, time.process_time() - started)
  assert fastest < budget, f'{name}: {fastest * 1000:.0f} ms, budget {budget * 1000:.0f} ms'


def test_coverage_guided_fuzzing_finds_nothing(tmp_path):
  """A short atheris run (tests/fuzz_parse_atheris.py; longer runs are a command): libFuzzer
  exits non-zero and saves the input if the property fails for any mutation it tries, or if
  one input takes longer than its -timeout."""
  pytest.importorskip('atheris')
  corpus = tmp_path / 'corpus'
  done = subprocess.run(
      [sys.executable, '-m', 'tests.fuzz_parse_atheris', '-runs=20000', '-max_len=4096',
       '-timeout=5', f'-artifact_prefix={tmp_path}/', str(corpus)],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Done 20000 runs' in done.stderr
  assert len(os.listdir(corpus)) > 3 * 20, 'the run added inputs that reached new code'
