"""ParseAndClean and Enrich on the DirectRunner: good records out, every bad one dead-lettered
with its raw bytes, where it came from, the stage and the reason; counted in metrics."""

import json
import os
import random
import uuid

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.messages import malform, network_json_rows, network_message_from_json
from generator.source import SourceConfig, generate_messages
from schemas.kdd import read_kdd_csv
from schemas.records import KDD_FEATURES, MEMORY, NETWORK, PROCESS, SCHEMAS
from tests.factories import BASE_TS, memory_record, message, network_record, process_record
from tests.test_fuzz_parse import payloads
from transforms.dead_letter import DEAD_LETTER
from transforms.batch import RecordBatch
from transforms.cleaning import clean_record
from transforms.enrich import UNBOUNDED, Enrich, join_key
from transforms.ids import UUID_NAMESPACE, stable_uuid, uuid5
from transforms.parse import ParseAndClean, _typed_decoder, decode_json, parse_chunks
from transforms.source import SourceMessage

KDD_SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'kdd_sample.csv')

GOOD_NETWORK = network_record(1)
# (payload, stage, a fragment of the error): the malformed-input corpus.
BAD_NETWORK = [
    (b'{"duration": 0, "protocol_type": "tc', 'parse', 'JSONDecodeError'),
    (b'', 'parse', 'JSONDecodeError'),
    (b'\xff\xfe{"duration": 1}', 'parse', 'not valid UTF-8'),
    (b'{"duration": NaN}', 'parse', 'unexpected character'),  # NaN is not JSON
    (b'{"duration": Infinity}', 'parse', 'unexpected character'),
    (b'[' * 100_000 + b']' * 100_000, 'parse', 'depth limit exceeded'),  # deep nesting
    (json.dumps({**GOOD_NETWORK, 'src_bytes': 'lots'}).encode(), 'clean', 'src_bytes: not a'),
    (json.dumps({**GOOD_NETWORK, 'src_bytes': 10**40}).encode(), 'clean', 'out of range'),
    (json.dumps({**GOOD_NETWORK, 'count': [1, 2]}).encode(), 'clean', 'list where a number'),
    (b'"just a string"', 'clean', 'expected a JSON object, got str'),
    (b'x' * (1 << 21), 'parse', 'exceeds'),
]


def _stage_and_reason(row):
  return row['stage'], row['error']


def test_network_messages_clean_and_dead_letter():
  good = [message('network', network_record(i), offset=i) for i in range(5)]
  # An unknown field is tolerated: schemas grow, old jobs keep running.
  good.append(message('network', {**network_record(5), 'new_field': 'x'}, offset=5))
  bad = [message('network', payload, offset=100 + i) for i, (payload, _, _) in
         enumerate(BAD_NETWORK)]
  pipeline = TestPipeline()
  result = pipeline | beam.Create(good + bad) | ParseAndClean(NETWORK)
  assert_that(result['network'] | beam.FlatMap(lambda batch: batch.columns['uuid']),
              equal_to([f'net-{i:06d}' for i in range(6)]), label='CleanRecords')

  def check_dead_letters(rows):
    by_offset = {r['offset']: r for r in rows}
    assert sorted(by_offset) == list(range(100, 100 + len(BAD_NETWORK)))
    for i, (payload, stage, reason) in enumerate(BAD_NETWORK):
      row = by_offset[100 + i]
      assert row['payload'] == payload, 'the raw bytes, unchanged'
      assert (row['stage'], row['source'], row['partition']) == (stage, 'test-network', 0)
      assert reason in row['error'], (reason, row['error'])
      assert len(row['error']) <= 500
  assert_that(result[DEAD_LETTER], check_dead_letters, label='DeadLetters')
  run = pipeline.run()
  run.wait_until_finish()
  counters = {c.key.metric.name: c.committed
              for c in run.metrics().query(MetricsFilter())['counters']}
  assert counters['network_messages'] == 6 + len(BAD_NETWORK)
  assert counters['network_cleaned'] == 6
  assert counters['network_dead_lettered'] == len(BAD_NETWORK)


def test_host_message_arrays_dead_letter_each_bad_record_alone():
  ts = BASE_TS + 10
  mixed_array = [process_record(1, 10, 'sshd', ts, False),
                 {'machine': '1', 'CMD': 'x', 'ts': ts},  # no PID
                 process_record(1, 11, 'bash', ts, False, CPU='hot')]
  messages = [
      message('process', mixed_array, offset=0),
      message('process', process_record(1, 12, 'vim', ts, False), offset=1),  # not an array
      message('process', [], offset=2),  # an empty snapshot is fine and yields nothing
  ]
  pipeline = TestPipeline()
  result = pipeline | beam.Create(messages) | ParseAndClean(PROCESS)
  assert_that(result['process'] | beam.FlatMap(
      lambda batch: zip(batch.columns['CMD_PID'], batch.record_indexes)),
              equal_to([('sshd_10', 0)]), label='CleanRecords')
  assert_that(
      result[DEAD_LETTER] | beam.Map(
          lambda r: (r['offset'], r['record_index'], r['stage'], r['error'][:20],
                     json.loads(r['payload']) if r['record_index'] is not None else None)),
      equal_to([
          (0, 1, 'clean', 'PID: required field ', mixed_array[1]),
          (0, 2, 'clean', "CPU: not a number: '", mixed_array[2]),
          (1, None, 'parse', 'expected a JSON arra', None),
      ]), label='DeadLetters')
  pipeline.run()


def test_enrich_sets_event_time_uuid_site_and_host_key():
  ts = BASE_TS + 42
  pipeline = TestPipeline()
  memory = (pipeline
            | 'Memory' >> beam.Create([message('memory', [memory_record(4, 9, 'nginx', ts, False)],
                                                offset=7)])
            | 'ParseMemory' >> ParseAndClean(MEMORY))
  # The factories' fixed 2023 times: the event-time bounds are tested on their own.
  enriched = memory['memory'] | 'EnrichMemory' >> Enrich(MEMORY, default_site='lab',
                                                          bounds=UNBOUNDED)

  def check_memory(records):
    [record] = records
    assert join_key(MEMORY)(record) == (4, 'nginx_9')
    assert record['event_time'].timestamp() == ts
    assert record['site'] == 'lab'
    assert len(record['uuid']) == 36 and len(record['record_id']) == 36
  assert_that(enriched['records'] | 'MemoryRows' >> beam.FlatMap(RecordBatch.rows),
              check_memory, label='Memory')

  parsed_network = (pipeline
             | 'Network' >> beam.Create([
                 message('network', network_record(1, utc='2024-03-01T12:00:00Z'), offset=1),
                 message('network', network_record(2, utc='yesterday'), offset=2),
                 message('network', network_record(3, uuid=None, site=None), offset=3)])
             | 'ParseNetwork' >> ParseAndClean(NETWORK))
  network = parsed_network['network'] | 'EnrichNetwork' >> Enrich(NETWORK, default_site='lab',
                                                                 bounds=UNBOUNDED)

  def check_network(records):
    by_seq = {r['sequence_id']: r for r in records}
    assert sorted(by_seq) == [1, 3]
    assert by_seq[1]['event_time'].isoformat() == '2024-03-01T12:00:00+00:00'
    assert by_seq[1]['uuid'] == 'net-000001' and by_seq[1]['site'] == 'site-a'
    assert by_seq[3]['site'] == 'lab' and len(by_seq[3]['uuid']) == 36
  assert_that(network['records'] | 'NetworkRows' >> beam.FlatMap(RecordBatch.rows),
              check_network, label='Network')
  assert_that(network[DEAD_LETTER] | beam.Map(lambda r: (r['offset'], r['stage'], r['error'])),
              equal_to([(2, 'enrich', "utc: not an ISO-8601 time of years 1-9999: 'yesterday'")]),
              label='NetworkDeadLetters')
  pipeline.run()


def test_derived_uuids_are_stable_across_runs():
  raw = memory_record(4, 9, 'nginx', BASE_TS, False)
  first = stable_uuid(MEMORY, clean_record(MEMORY, raw), message('memory', [raw], offset=1), 0)
  replayed = stable_uuid(MEMORY, clean_record(MEMORY, raw),
                         message('memory', [raw], offset=99), 0)
  other = stable_uuid(MEMORY, clean_record(MEMORY, {**raw, 'ts': BASE_TS + 1}),
                      message('memory', [raw], offset=1), 0)
  assert first == replayed
  assert first != other


def test_derived_uuids_did_not_change_with_record_ids():
  """Archives written before record ids dedupe by these uuids: the derivation must not move."""
  raw = memory_record(4, 9, 'nginx', BASE_TS, False)
  assert stable_uuid(MEMORY, clean_record(MEMORY, raw), message('memory', [raw], offset=1),
                     0) == '5b09d269-efa8-5bf9-9363-c83c26992777'
  assert stable_uuid(NETWORK, {}, message('network', b'{}', offset=-1),
                     None) == 'abb036cc-542e-5e7d-902b-fc819fe581a7'
  assert stable_uuid(NETWORK, {}, message('network', b'{}', offset=5),
                     None) == '65850845-ddfe-5f0d-897b-7faf06fe8212'


def test_the_fast_uuid5_is_uuid5():
  for name in ('', 'x', 'record|network|net-1|' + 'a' * 64 + '|', 'é☃' * 100, 'u' * 5000):
    assert uuid5(name) == str(uuid.uuid5(UUID_NAMESPACE, name))


# ---- the typed decoder against the exact path -------------------------------------------------

def _exact(value):
  """decode_json under another name: parse_chunks takes the typed decoder only for
  decode_json itself, so this is the exact path (orjson, dicts, every value checked)."""
  return decode_json(value)


def _outcome(schema, messages, decode=decode_json):
  out = []
  for batch, dead in parse_chunks(schema, messages, max_records=7, decode=decode):
    out.append(({name: [(type(v).__name__, repr(v)) for v in values]
                 for name, values in batch.columns.items()},
                [m.offset for m in batch.messages], batch.record_indexes,
                [{k: v for k, v in row.items() if k != 'failed_at'} for row in dead]))
  return out


def assert_typed_path_is_exact(schema, values):
  messages = [SourceMessage(schema.stream, v, 'test', 0, i) for i, v in enumerate(values)]
  assert _outcome(schema, messages) == _outcome(schema, messages, _exact)


# JSON number tokens, and strings around the typed decoder's checks (escapes, surrogates).
NUMBER_TOKENS = st.from_regex(r'\A-?(0|[1-9]\d{0,25})(\.\d{1,20})?([eE][+-]?\d{1,3})?\Z')
ODD_TOKENS = st.sampled_from([
    b'true', b'null', b'"\\ud800"', b'"\\udc00x"', b'"\\ud83d\\ude00"', b'"\xed\xa0\x80"',
    b'"\xc0\xaf"', b'"\xff"', b'"\\u0000"', b'" 12 "', b'"1.5K"', b'"-"', b'[]', b'{}', b'1e400',
    b'-1e400', b'4611686018427387904', b'4611686018427387905', b'-4611686018427387905',
    b'18446744073709551616', b'1' * 30, b'NaN', b'01', b'1.', b'.5', b'-0', b'\x0c1'])


@st.composite
def token_messages(draw, schema):
  """Messages written token by token: a field's value is any JSON token above, now and then
  an unknown or repeated field, and sometimes bytes that are no JSON at all."""
  def record():
    names = draw(st.lists(st.sampled_from(schema.names + ('extra',)), max_size=12))
    return b'{' + b','.join(b'"%s":%s' % (n.encode(), draw(NUMBER_TOKENS.map(str.encode) |
                                                           ODD_TOKENS)) for n in names) + b'}'
  if schema.is_array:
    text = b'[' + b','.join(record() for _ in range(draw(st.integers(0, 3)))) + b']'
  else:
    text = record()
  return draw(st.sampled_from([text, text, text, b' ' + text + b'\n', text[:-1], b'\xef\xbb\xbf'
                               + text, text + b'x']))


@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_the_typed_decoder_gives_what_the_exact_path_gives(data):
  schema = data.draw(st.sampled_from([NETWORK, PROCESS, MEMORY]))
  values = data.draw(st.lists(token_messages(schema), max_size=8))
  values += data.draw(st.lists(payloads(schema.stream), max_size=1))
  assert_typed_path_is_exact(schema, values)


def test_the_typed_decoder_takes_real_and_generated_messages_as_the_exact_path_does():
  frame = read_kdd_csv(KDD_SAMPLE)
  network = [network_message_from_json(row, topic='t', timestamp_ms=0, sequence_id=i, index=i,
                                       site='s', rng=random.Random(i)).value
             for i, row in enumerate(network_json_rows(frame[list(KDD_FEATURES)]))]
  for stream, values in [('network', network)] + [
      (s, [m.value for m in generate_messages(SourceConfig(streams=(s,), seed=5, count=200))])
      for s in ('network', 'process', 'memory')]:
    schema = SCHEMAS[stream]
    # All of them take the typed decoder (else this would compare the exact path with itself).
    assert all(_typed_decoder(schema)(v) is not None for v in values)
    assert_typed_path_is_exact(schema, values)
    malformed = [malform(v, random.Random(i)) for i, v in enumerate(values)]
    assert_typed_path_is_exact(schema, malformed)


def test_a_bad_record_of_a_typed_host_message_carries_its_own_json():
  good = process_record(1, 2, 'sshd', BASE_TS, False)
  bad = {'machine': '1', 'PID': 'x', 'CMD': 'sshd', 'ts': BASE_TS}  # fields absent, PID bad
  value = json.dumps([good, bad]).encode()
  assert _typed_decoder(PROCESS)(value)  # a message the typed decoder reads
  (batch, dead), = parse_chunks(PROCESS, [SourceMessage('process', value, 'test', 0, 9)])
  assert len(batch) == 1 and len(dead) == 1
  assert json.loads(dead[0]['payload']) == bad and dead[0]['record_index'] == 1
  assert dead[0]['error'] == "PID: not a number: 'x'"
