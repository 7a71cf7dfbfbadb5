"""Hostile input through ParseAndClean (the public transform, on the DirectRunner): random
bytes, deep nesting, huge numbers, NaN / Infinity, wrong types, very long strings and arrays.

Whatever arrives, nothing escapes as an exception, and every input ends up exactly once
either as a cleaned record or as a dead letter carrying its raw payload; no cleaned record
holds a non-finite number. Each hypothesis example is a whole batch of messages run through
one pipeline (a pipeline per payload would cost seconds each).
"""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.records import MEMORY, NETWORK, PROCESS
from tests.factories import BASE_TS, memory_record, network_record, process_record
from transforms.dead_letter import DEAD_LETTER
from transforms.parse import ParseAndClean
from transforms.source import SourceMessage

# No shrinking: each step reruns a pipeline (minutes); the failing batch is printed whole.
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Values that have broken parsers: out-of-range and non-finite numbers, wrong types, big ones.
HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**308, 1e308, -1e308, 5e-324, -0.0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.sampled_from(['NaN', 'nan', 'Infinity', '-inf', '1e400', ' 1.5K', '12M', '-3K', '40%',
                     '-', '', '1_000', '0x10', '１２', '\u0000', '\ud800'[:0] + 'é', 'x' * 5000]),
    st.lists(st.integers(), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=3))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def _network_mutation(draw):
  record = network_record(draw(st.integers(0, 999)))
  for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
    record[name] = draw(HOSTILE_VALUES)
  return record


def _host_mutation(draw, factory):
  record = factory(draw(st.integers(0, 9)), draw(st.integers(1, 99999)), 'cmd', BASE_TS, False)
  for name in draw(st.lists(st.sampled_from(sorted(record)), max_size=4)):
    record[name] = draw(HOSTILE_VALUES)
  return record


def _dumps(value) -> bytes:
  # json.dumps writes NaN / Infinity tokens for non-finite floats: exactly the hostile case.
  return json.dumps(value).encode('utf-8')


@st.composite
def payloads(draw, stream: str) -> bytes:
  kind = draw(st.sampled_from(['bytes', 'json', 'mutated', 'nested', 'number', 'long']))
  if kind == 'bytes':
    return draw(st.binary(max_size=300))
  if kind == 'json':
    return _dumps(draw(JSON_VALUES))
  if kind == 'nested':
    depth = draw(st.sampled_from([100, 1000, 5000, 100_000]))
    opener, closer = draw(st.sampled_from([(b'[', b']'), (b'{"a":', b'}')]))
    return opener * depth + b'1' + closer * depth
  if kind == 'number':
    digits = draw(st.sampled_from([20, 400, 5000]))
    return b'{"duration": 1' + b'0' * digits + b'}'
  if kind == 'long':
    if draw(st.booleans()):
      return _dumps({**network_record(1), 'service': 'x' * draw(st.sampled_from([5000, 10**6]))})
    return _dumps(list(range(draw(st.sampled_from([10_000, 300_000])))))
  if stream == 'network':
    return _dumps(_network_mutation(draw))
  factory = process_record if stream == 'process' else memory_record
  return _dumps([_host_mutation(draw, factory) for _ in range(draw(st.integers(0, 4)))])


def _record_keys(element):
  """(offset, record_index) of each record out of ParseAndClean, whether it emits one
  record per element (.message) or batches of them (.messages)."""
  if hasattr(element, 'messages'):
    return [(m.offset, i) for m, i in zip(element.messages, element.record_indexes)]
  return [(element.message.offset, element.record_index)]


def _numbers(element):
  if hasattr(element, 'columns'):
    return [v for values in element.columns.values() for v in values if isinstance(v, float)]
  return [v for v in element.record.values() if isinstance(v, float)]


def _check(stream: str, messages: list[SourceMessage], records, dead) -> None:
  by_offset = {m.offset: m for m in messages}
  outcomes = collections.Counter()
  for element in records:
    assert all(math.isfinite(v) for v in _numbers(element)), 'a non-finite number was cleaned'
    outcomes.update(_record_keys(element))
  for row in dead:
    message = by_offset[row['offset']]
    assert row['source'] == message.source and row['stream'] == stream
    assert isinstance(row['payload'], bytes) and len(row['error']) <= 500
    if row['record_index'] is None:
      assert row['payload'] == message.value, 'a dead-lettered message keeps its raw bytes'
    else:
      assert json.loads(row['payload']) is not None or row['payload'] == b'null'
    outcomes[(row['offset'], row['record_index'])] += 1
  assert all(n == 1 for n in outcomes.values()), 'an input came out twice'
  for message in messages:
    mine = {i for (offset, i) in outcomes if offset == message.offset}
    if stream == 'network' or mine == {None}:
      assert mine == {None}, f'message {message.value[:60]!r} vanished'
    else:
      # A host array: each of its records exactly once, cleaned or dead-lettered alone.
      assert mine == set(range(len(json.loads(message.value)))), message.value[:60]


def _run(stream: str, schema, values: list[bytes]) -> None:
  messages = [SourceMessage(stream, v, source=f'fuzz-{stream}', partition=0, offset=i)
              for i, v in enumerate(values)]
  pipeline = TestPipeline()
  result = pipeline | beam.Create(messages, reshuffle=False) | ParseAndClean(schema)
  both = ((result['records'] | 'TagRecords' >> beam.Map(lambda e: ('records', e)),
           result[DEAD_LETTER] | 'TagDead' >> beam.Map(lambda e: ('dead', e)))
          | beam.Flatten())

  def check(outputs):
    _check(stream, messages, [e for k, e in outputs if k == 'records'],
           [e for k, e in outputs if k == 'dead'])
  assert_that(both, check)
  pipeline.run().wait_until_finish()


@pytest.mark.parametrize('stream,schema', [('network', NETWORK), ('process', PROCESS),
                                           ('memory', MEMORY)])
def test_hostile_messages_end_parsed_or_dead_lettered(stream, schema):

  @SETTINGS
  @given(st.lists(payloads(stream), min_size=1, max_size=40))
  def check(values):
    _run(stream, schema, values)

  check()


def test_the_property_fails_when_a_message_vanishes():
  """The check is not vacuous: a message with no outcome at all is caught."""
  messages = [SourceMessage('network', b'{}', source='fuzz-network', partition=0, offset=0)]
  with pytest.raises(AssertionError, match='vanished'):
    _check('network', messages, [], [])


def test_coverage_guided_fuzzing_finds_nothing(tmp_path):
  """A short atheris run (tests/fuzz_parse_atheris.py; longer runs are a command): libFuzzer
  exits non-zero and saves the input if the property fails for any mutation it tries."""
  pytest.importorskip('atheris')
  corpus = tmp_path / 'corpus'
  done = subprocess.run(
      [sys.executable, '-m', 'tests.fuzz_parse_atheris', '-runs=20000', '-max_len=4096',
       f'-artifact_prefix={tmp_path}/', str(corpus)],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'Done 20000 runs' in done.stderr
  assert len(os.listdir(corpus)) > 3 * 20, 'the run added inputs that reached new code'
