"""ParseAndClean and Enrich on the DirectRunner: good records out, every bad one dead-lettered
with its raw bytes, where it came from, the stage and the reason; counted in metrics."""

import json
import uuid

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import MEMORY, NETWORK, PROCESS
from tests.factories import BASE_TS, memory_record, message, network_record, process_record
from transforms.dead_letter import DEAD_LETTER
from transforms.batch import RecordBatch
from transforms.cleaning import clean_record
from transforms.enrich import UNBOUNDED, Enrich, join_key
from transforms.ids import UUID_NAMESPACE, stable_uuid, uuid5
from transforms.parse import ParseAndClean

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
