"""The archive sink's per-batch step: each record lands in its event date's (and shard's)
chunk, however the batch's times spread, and the chunks read back as the records."""

import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.utils.timestamp import Timestamp

from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import NETWORK
from tests.factories import message, network_record
from transforms.enrich import UNBOUNDED, enrich_batch
from transforms.parquet_sink import _ArrowChunksFn, _WriteGroupFn, event_date
from transforms.parse import parse_messages

UTC = datetime.timezone.utc


def _batch(times):
  records = [network_record(i) for i in range(len(times))]
  batch, dead = parse_messages(NETWORK, [message('network', r, offset=i)
                                         for i, r in enumerate(records)])
  assert not dead
  batch, dead = enrich_batch(NETWORK, batch, 'site', UNBOUNDED)
  assert not dead
  return batch.with_columns(event_time=list(times))


def _chunks(batch, num_shards):
  to_chunks = _ArrowChunksFn('archive/network', ARCHIVE_SCHEMAS['network'], 'event_time', num_shards)
  to_chunks.start_bundle()
  to_chunks.process(batch, timestamp=Timestamp(0))
  return {value[0]: pa.ipc.open_stream(value[1]).read_all()
          for value in (w.value for w in to_chunks.finish_bundle())}


@pytest.mark.parametrize('num_shards', [1, 3])
def test_each_record_lands_in_its_own_date_and_shard(num_shards, tmp_path):
  times = [datetime.datetime(2024, 3, 1, 23, 59, 59, 999999, tzinfo=UTC),
           datetime.datetime(2024, 3, 2, 0, 0, tzinfo=UTC),
           datetime.datetime(2024, 3, 1, 22, tzinfo=datetime.timezone(datetime.timedelta(hours=-3))),
           datetime.datetime(2024, 3, 1, 12),  # naive: UTC, as parsing takes it
           datetime.datetime(1, 1, 1, tzinfo=UTC),
           datetime.datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
           datetime.datetime(9999, 12, 31, 23, 59, tzinfo=UTC)] * 3
  batch = _batch(times)
  chunks = _chunks(batch, num_shards)
  to_chunks = _ArrowChunksFn('archive/network', ARCHIVE_SCHEMAS['network'], 'event_time', num_shards)
  expected = {}
  for uuid, when in zip(batch.columns['uuid'], times):
    expected.setdefault(('archive/network', event_date(when), to_chunks._shard(uuid)), set()).add(uuid)
  assert {key: set(table.column('uuid').to_pylist()) for key, table in chunks.items()} == expected
  assert {date for _, date, _ in expected} == {
      '2024-03-01', '2024-03-02', '0001-01-01', '1969-12-31', '9999-12-31'}
  # The files read back as the records.
  path = str(tmp_path / 'part.parquet')
  uuids = []
  for table in chunks.values():
    assert _WriteGroupFn._write(path, [_ipc(table)]) == table.num_rows
    uuids += pq.read_table(path).column('uuid').to_pylist()
  assert sorted(uuids) == sorted(batch.columns['uuid'])


def test_a_batch_of_one_day_is_one_chunk():
  start = datetime.datetime(2024, 5, 5, tzinfo=UTC)
  batch = _batch([start + datetime.timedelta(seconds=i) for i in range(50)])
  chunks = _chunks(batch, 1)
  assert list(chunks) == [('archive/network', '2024-05-05', 0)]
  assert chunks[('archive/network', '2024-05-05', 0)].column('uuid').to_pylist() == batch.columns['uuid']


def _ipc(table):
  sink = pa.BufferOutputStream()
  with pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table)
  return sink.getvalue().to_pybytes()
