"""The output layout (schemas/layout.py) against the sink that writes by it, and the record
schemas' per-stream behaviour against their own fields."""

from __future__ import annotations

import datetime
import os

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline

from schemas import layout
from schemas.outputs import ALERT_SCHEMA, OUTPUT_SCHEMAS
from schemas.records import (HOST_STREAMS, INT, ISO8601, SCHEMAS, STR, UNIX_SECONDS,
                             RecordSchema)
from transforms.outputs import WriteOutputs

_UTC = datetime.timezone.utc


def _alert(i: int, day: int) -> dict:
  when = datetime.datetime(2026, 11, day, 12, 0, tzinfo=_UTC)
  return {'event_id': f'e{i}', 'kind': 'network_anomaly', 'event_time': when,
          'processing_time': when, 'site': 'lab', 'score': 0.9}


def test_finished_files_are_what_the_sink_wrote_and_nothing_half_written(tmp_path):
  output = str(tmp_path)
  with TestPipeline() as pipeline:
    rows = pipeline | beam.Create([_alert(i, 23 + i % 2) for i in range(10)])
    _ = {layout.ALERTS: rows} | WriteOutputs(output, site='lab', run_id='run1')
  folder = layout.output_folder(output, layout.ALERTS)
  day = os.path.join(folder, layout.partition_name('2026-11-23'))
  # What a reader must never take: the sink's temporary, other hidden names, other files.
  temporary = layout.in_progress_name(layout.file_name('lab-run2', 0, 0))
  for name in (temporary, '.hidden.parquet', 'notes.txt'):
    with open(os.path.join(day, name), 'wb') as f:
      f.write(b'PAR1 half a file')
  written = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.startswith('lab-run1-'))
  assert len(written) == 2  # one per date
  listed = sorted(m.path for m in layout.finished_files(folder))
  assert listed == written
  assert sum(pq.ParquetFile(p).metadata.num_rows for p in listed) == 10
  assert [m.path for m in layout.finished_files(folder, ['2026-11-23'])] == [
      p for p in written if f'{os.sep}dt=2026-11-23{os.sep}' in p]
  assert layout.finished_files(layout.output_folder(output, layout.ATTACKS)) == []
  assert not layout.is_finished(temporary) and layout.is_hidden(temporary)


def test_every_output_folder_has_a_schema_and_a_time_field():
  assert set(layout.FOLDERS) == set(OUTPUT_SCHEMAS) == set(layout.TIME_FIELDS)
  for folder, field in layout.TIME_FIELDS.items():
    assert field in OUTPUT_SCHEMAS[folder].names, folder
  assert OUTPUT_SCHEMAS[layout.ALERTS] is ALERT_SCHEMA


def _names(schema: RecordSchema) -> set[str]:
  return {f.name for f in schema.fields + schema.derived}


def test_each_schema_names_only_its_own_fields_for_its_behaviour():
  for schema in SCHEMAS.values():
    names = _names(schema)
    time_kind = schema.field(schema.time_field).kind
    assert (schema.time_format, time_kind) in ((ISO8601, STR), (UNIX_SECONDS, INT)), schema.stream
    assert set(schema.identity_fields) <= names, schema.stream
    assert set(schema.join_key) <= names, schema.stream
    assert schema.label_column in names, schema.stream
    assert schema.payload in ('object', 'array'), schema.stream
  assert HOST_STREAMS == tuple(s for s in SCHEMAS if SCHEMAS[s].joined)
  # The join pairs records of the host streams by one key: it must be the same on both.
  assert len({SCHEMAS[s].join_key for s in HOST_STREAMS}) == 1
