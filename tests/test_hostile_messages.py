"""One regression test per class of hostile message found by the red-team read (issue 18):
each ran into an exception, a stall or a silent loss before. They run the job's own functions
and DoFns (tests/test_fuzz_parse.py's :func:`run_stages`), and the real Parquet sink where
folders are the point."""

from __future__ import annotations

import datetime
import json
import os
import time

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from generator.synthetic_network import generate_network
from model import dataset
from schemas.limits import MAX_BATCH_RECORDS, MAX_RECORDS_PER_MESSAGE
from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import KDD_BASIC_FEATURES, MEMORY, NETWORK, PROCESS
from tests.factories import memory_record, network_record, process_record
from tests.fuzzing import (BOUNDS, archived_rows, iso, load_models, nested, now_s,
                           run_and_check, run_stages)
from transforms.alerts import network_alert
from transforms.batch import RecordBatch
from transforms.cleaning import clean_record
from transforms.dead_letter import dead_letter_row, record_by_record
from transforms.enrich import UNBOUNDED, EventTimeBounds, enrich_batch
from transforms.ids import attack_event_id
from transforms.parquet_sink import ParquetFolder, WritePartitionedParquet, event_date
from transforms.parse import parse_chunks, parse_messages
from transforms.source import SourceMessage

UTC = datetime.timezone.utc


@pytest.fixture(scope='module')
def models(model_dir):
  return load_models(model_dir)


def msg(stream: str, payload, offset: int = 0, timestamp_ms=None) -> SourceMessage:
  value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
  return SourceMessage(stream, value, 'hostile', 0, offset, timestamp_ms)


def dead_by_offset(outcome):
  return {(d['offset'], d['record_index']): d for d in outcome.dead}


# ---- exceptions that escaped --------------------------------------------------------------

def test_nesting_the_decoder_accepts_but_no_encoder_can_re_encode(models):
  """Depth 1000 is within orjson's decoding limit and beyond json.dumps' recursion (and
  orjson.dumps'): the record's dead letter keeps the whole message's bytes instead of raising."""
  now = now_s()
  deep = nested(1000).decode()
  array = f'[{json.dumps(process_record(1, 2, "ok", now, False))},' \
          f'{{"machine": "1", "PID": "2", "CMD": "c", "ts": {now}, "CPU": {deep}}}]'.encode()
  network = b'{"duration": ' + nested(1000) + b'}'
  outcome = run_and_check([msg('process', array, 0), msg('network', network, 1)], models)
  dead = dead_by_offset(outcome)
  assert dead[(0, 1)]['stage'] == 'clean' and dead[(0, 1)]['payload'] == array
  assert 'CPU: list where a number' in dead[(0, 1)]['error']
  assert dead[(1, None)]['payload'] == network
  assert [r[2] for r in archived_rows(outcome)] == [0], 'the good record of the array is kept'


@pytest.mark.parametrize('utc', ['0001-01-01T00:00:00+14:00', '9999-12-31T23:59:59-14:00',
                                 '0001-01-01T00:00:00', '9999-12-31T23:59:59.999999',
                                 '2024-02-30T00:00:00Z', '+002024-01-01'])
@pytest.mark.parametrize('bounds', [BOUNDS, UNBOUNDED], ids=['bounded', 'unbounded'])
def test_calendar_edge_times_are_dead_letters_not_exceptions(models, utc, bounds):
  message = msg('network', network_record(1, utc=utc))
  outcome = run_stages([message], models, bounds=bounds)
  if outcome.archived:  # only an unbounded job archives year 1 or 9999, in a 4-digit folder
    [(_, _, _, row)] = archived_rows(outcome)
    assert bounds is UNBOUNDED and len(event_date(row['event_time'])) == 10
    return
  [dead] = outcome.dead
  assert dead['stage'] == 'enrich' and dead['payload'] == message.value
  assert 'utc' in dead['error'] or 'event time' in dead['error']


@pytest.mark.parametrize('ts', [-62135596801, 253402300800, 2**61, -(2**61)])
def test_host_times_beyond_the_calendar_are_dead_letters(models, ts):
  outcome = run_stages([msg('memory', [memory_record(1, 2, 'c', ts, False)])], models,
                       bounds=UNBOUNDED)
  [dead] = outcome.dead
  assert (dead['stage'], dead['record_index']) == ('enrich', 0) and 'ts' in dead['error']


def test_dead_letter_rows_cannot_fail_to_build():
  class Hostile(Exception):
    def __str__(self):
      raise RuntimeError('no message for you')

  row = dead_letter_row(SourceMessage('network', b'x', 't', 0, 1), 'parse', Hostile())
  assert row['error'].startswith('Hostile') and row['payload'] == b'x'
  row = dead_letter_row(object(), 'route', 'lone surrogate \udc80 in an error')
  assert row['stream'] is None and row['payload'].startswith(b'<object')
  assert row['error'].encode('utf-8')  # storable in a Parquet string column
  assert dead_letter_row(SourceMessage('x', None), 'route', 'e')['payload'] == b''


def test_a_batch_failing_as_a_whole_is_retried_record_by_record():
  """One corrupt element (here: a record whose message is not a message at all) must not take
  the batch's other records with it."""
  now = now_s()
  good, _ = parse_messages(MEMORY, [msg('memory', [memory_record(1, p, 'c', now, False)
                                                   for p in range(3)])])
  broken = RecordBatch('memory', good.columns, [good.messages[0], None, good.messages[2]],
                       good.record_indexes)
  enriched, dead = record_by_record(
      lambda batch: enrich_batch(MEMORY, batch, 'lab'), broken, 'enrich')
  assert enriched.columns['PID'] == [0, 2]
  [row] = dead
  assert row['stage'] == 'enrich' and 'AttributeError' in row['error']


def test_elements_that_are_not_messages_are_route_dead_letters(models):
  outcome = run_stages([None, 7, b'bytes', ('network', b'{}'),
                        SourceMessage(['unhashable'], b'{}')], models)
  assert [d['stage'] for d in outcome.dead] == ['route'] * 5
  assert outcome.dead[2]['payload'] == b'bytes'


# ---- CPU and memory -------------------------------------------------------------------------

def test_long_digit_strings_cost_linear_time(models):
  """'1' * n + 'x' in a numeric field backtracked quadratically: seconds for a few KB."""
  now = now_s()
  for n in (5_000, 50_000, 500_000):
    text = '1' * n + 'x'
    messages = [msg('network', network_record(1, utc=iso(now), src_bytes=text)),
                msg('process', [process_record(1, 2, 'c', now, False, CPU=text)], 1)]
    started = time.perf_counter()
    outcome = run_and_check(messages, models)
    assert time.perf_counter() - started < 0.5
    assert {d['stage'] for d in outcome.dead} == {'clean'}
    assert all('longer than 64' in d['error'] for d in outcome.dead)


def test_an_array_over_the_record_bound_is_one_dead_letter(models):
  over = msg('process', [{'machine': 1, 'PID': 2, 'CMD': 'c', 'ts': now_s()}] *
             (MAX_RECORDS_PER_MESSAGE + 1))
  bad = msg('memory', [{'PID': 'x'}] * MAX_RECORDS_PER_MESSAGE, 1)
  outcome = run_and_check([over, bad], models)
  whole = [d for d in outcome.dead if d['offset'] == 0]
  assert len(whole) == 1 and whole[0]['stage'] == 'parse'
  assert whole[0]['payload'] == over.value and 'exceeds 10000 records' in whole[0]['error']
  assert len([d for d in outcome.dead if d['offset'] == 1]) == MAX_RECORDS_PER_MESSAGE


def test_batches_of_host_arrays_are_cut_by_records():
  now = now_s()
  array = [memory_record(1, p, 'c', now, False) for p in range(3000)]
  messages = [msg('memory', array, i) for i in range(10)]
  sizes = [len(batch) for batch, _ in parse_chunks(MEMORY, messages)]
  assert sum(sizes) == 30_000 and len(sizes) > 1
  assert max(sizes) < MAX_BATCH_RECORDS + 3000  # the bound, plus at most one message


# ---- partitions and time -------------------------------------------------------------------

def test_event_times_outside_the_bounds_are_dead_letters_stage_enrich(models):
  now = now_s()
  offsets = {'8 days back': -8 * 86400, '6 days back': -6 * 86400, 'now': 0,
             '4 min ahead': 240, '10 min ahead': 600, 'year 997': -(now + 62135596800) + 10**10}
  messages = [msg('process', [process_record(1, i, 'c', now + delta, False)], i)
              for i, delta in enumerate(offsets.values())]
  outcome = run_and_check(messages, models)
  kept = sorted(r[1].offset for r in archived_rows(outcome))
  assert kept == [1, 2, 3]
  errors = {d['offset']: d['error'] for d in outcome.dead}
  assert all(d['stage'] == 'enrich' for d in outcome.dead)
  assert '--max_event_age_s' in errors[0] and '--max_event_lead_s' in errors[4]
  assert '--max_event_age_s' in errors[5]
  # The bounds are the job's flags: wider ones accept what these refused.
  wide = run_stages(messages[:1], models, bounds=EventTimeBounds(max_age_s=9 * 86400))
  assert not wide.dead


def test_far_apart_times_in_one_message_open_a_bounded_number_of_folders(models, tmp_path):
  """Event times across centuries in one host array made one dt= folder (and one file per
  roll) each; now only the bounded window reaches the sink, in YYYY-MM-DD folders."""
  now = now_s()
  times = [now + k * 86400 * 3 for k in range(-400, 5)]  # 1,200 days back to 12 ahead
  outcome = run_stages([msg('memory', [memory_record(1, i, 'c', ts, False)
                                       for i, ts in enumerate(times)])], models)
  batches = outcome.archived['memory']
  folder = str(tmp_path / 'archive')
  with TestPipeline() as pipeline:
    _ = ({'memory': pipeline | beam.Create(batches)}
         | WritePartitionedParquet(
             {'memory': ParquetFolder(folder, ARCHIVE_SCHEMAS['memory'], 'event_time')}))
  folders = sorted(os.listdir(folder))
  assert 1 <= len(folders) <= 9, folders
  assert all(len(f) == len('dt=YYYY-MM-DD') and f.startswith('dt=') for f in folders)
  assert len(outcome.dead) == len(times) - sum(len(b) for b in batches)


def test_partition_names_always_have_four_digit_years():
  assert event_date(datetime.datetime(997, 8, 7, 12, tzinfo=UTC)) == '0997-08-07'
  assert event_date(datetime.datetime(9, 1, 2, tzinfo=UTC)) == '0009-01-02'
  assert event_date(datetime.datetime(2024, 1, 1, 23, tzinfo=datetime.timezone(
      datetime.timedelta(hours=-2)))) == '2024-01-02'
  edge = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=14)))
  assert event_date(edge) == 'unknown'  # no UTC date: not a crash


@pytest.mark.parametrize('kafka_ms', [-1, 0, None])
def test_a_missing_kafka_timestamp_is_not_1970(models, kafka_ms):
  record = network_record(1)
  del record['utc']
  outcome = run_stages([msg('network', record, timestamp_ms=kafka_ms)], models,
                       bounds=UNBOUNDED)
  [dead] = outcome.dead
  assert dead['stage'] == 'enrich' and 'no event time' in dead['error']
  now_ms = now_s() * 1000
  outcome = run_stages([msg('network', record, timestamp_ms=now_ms)], models)
  [(_, _, _, row)] = archived_rows(outcome)
  assert row['event_time'].timestamp() * 1000 == now_ms


# ---- identity -------------------------------------------------------------------------------

def test_records_sharing_a_uuid_keep_distinct_ids_and_replays_keep_theirs(models):
  now = now_s()
  first = network_record(1, attack=True, uuid='dup', utc=iso(now))
  second = network_record(2, attack=True, uuid='dup', utc=iso(now))
  host = process_record(1, 2, 'c', now, True)
  messages = [msg('network', first, 0), msg('network', second, 1),
              msg('process', [host, host], 2),  # one record twice in an array
              msg('network', first, 3)]  # a replay of message 0 (same bytes, later offset)
  rows = {(m.offset, i): row for _, m, i, row in archived_rows(run_stages(messages, models))}
  assert rows[(0, None)]['uuid'] == rows[(1, None)]['uuid'] == 'dup'
  assert rows[(0, None)]['record_id'] != rows[(1, None)]['record_id']
  assert rows[(2, 0)]['record_id'] != rows[(2, 1)]['record_id']
  assert rows[(0, None)]['record_id'] == rows[(3, None)]['record_id']
  alerts = {k: network_alert(rows[k])['event_id'] for k in ((0, None), (1, None), (3, None))}
  assert alerts[(0, None)] != alerts[(1, None)] and alerts[(0, None)] == alerts[(3, None)]
  memory = {'record_id': 'm'}
  assert attack_event_id(rows[(2, 0)], memory) != attack_event_id(rows[(2, 1)], memory)
  again = {(m.offset, i): row['record_id']
           for _, m, i, row in archived_rows(run_stages(messages, models))}
  assert again == {k: row['record_id'] for k, row in rows.items()}, 'stable across runs'


def test_the_retrain_dedupes_by_record_id_and_falls_back_to_uuid():
  frame = pd_frame(4)
  table = dataset.archive_table('network', frame, start=datetime.datetime(2024, 1, 1,
                                                                         tzinfo=UTC))
  same_uuid = pa.array(['dup'] * 4)
  table = table.set_column(table.schema.get_field_index('uuid'), 'uuid', same_uuid)
  by_uuid = dataset.dedup_smallest(dataset.prepare_batch('network', table))
  assert by_uuid.num_rows == 1, 'an older archive (no record ids) dedupes by uuid'
  ids = pa.array(['r1', 'r2', 'r3', 'r1'])
  table = table.set_column(table.schema.get_field_index('record_id'), 'record_id', ids)
  assert dataset.dedup_smallest(dataset.prepare_batch('network', table)).num_rows == 3


# ---- empty records --------------------------------------------------------------------------

@pytest.mark.parametrize('payload', [
    {}, {'uuid': 'u', 'utc': '2024-01-01T00:00:00Z'}, {'protocol_type': 'tcp', 'label': 'x'},
    {name: 0 for name in ('duration', 'src_bytes', 'dst_bytes', 'land', 'wrong_fragment',
                          'urgent')}])
def test_an_empty_network_record_is_refused(models, payload):
  outcome = run_and_check([msg('network', payload)], models)
  [dead] = outcome.dead
  assert dead['stage'] == 'clean' and 'required field is missing' in dead['error']


def test_the_retrain_skips_archive_rows_without_the_required_features():
  frame = pd_frame(6)
  table = dataset.archive_table('network', frame, start=datetime.datetime(2024, 1, 1,
                                                                         tzinfo=UTC))
  for name in ('service', 'src_bytes'):
    column = table.column(name).to_pylist()
    column[1 if name == 'service' else 4] = None
    table = table.set_column(table.schema.get_field_index(name), name,
                             pa.array(column, table.schema.field(name).type))
  prepared = dataset.prepare_batch('network', table)
  assert prepared.num_rows == 4
  assert set(dataset.required_columns('network')) == set(KDD_BASIC_FEATURES)
  assert dataset.required_columns('process') == ['machine', 'CMD']
  # KDD CSV rows always have them; host archives too.
  host = dataset.archive_table('process', pd.DataFrame(
      [clean_record(PROCESS, process_record(1, p, 'c', now_s(), False)) for p in range(3)]),
      start=datetime.datetime(2024, 1, 1, tzinfo=UTC))
  assert dataset.prepare_batch('process', host).num_rows == 3


def pd_frame(n: int) -> pd.DataFrame:
  return generate_network(n, seed=3)


@pytest.mark.parametrize('age', [None, 0, -5, float('nan'), 1e300])
def test_an_open_or_absurd_bound_accepts_any_age(models, age):
  old = msg('process', [process_record(1, 2, 'c', 1_000_000_000, False)])
  outcome = run_stages([old], models, bounds=EventTimeBounds(max_age_s=age))
  assert not outcome.dead and outcome.archived
