"""WritePartitionedParquet: rows -> Parquet folders partitioned by event date, rolled by time.

``beam.io.WriteToParquet`` writes one prefix; DESIGN.md wants ``dt=YYYY-MM-DD/`` folders and,
in streaming, a bounded number of files. So rows are re-windowed into the global window with a
processing-time trigger (every ``roll_seconds``, and once more at the end of a bounded input),
grouped by (folder, date, shard), and each group is written as one file with pyarrow in row
batches. Every folder goes through the same one shuffle: on Flink each shuffle is a task of
its own whose timers and flushers run whether rows flow or not, and the job has seven folders
(benchmarks/README.md, "One shuffle for every output folder").
Nothing is ever late for this sink: a record that arrives a day late goes into the next file of
its own date folder rather than being dropped.

File names follow :mod:`schemas.layout`, ``<site>-<run>-<pane>-<shard>.parquet``: deterministic within a run, so a retried
bundle rewrites the same file instead of adding a copy, and distinct across runs and sites, so
several jobs can share one output folder. The file is written under a temporary name and
renamed, so readers never see half a file.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import re
import uuid
import zlib
from typing import Any, Iterable, Mapping, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import GlobalWindows

from schemas.layout import file_name, in_progress_name, partition_name
from transforms.batch import RecordBatch

ROW_BATCH = 10_000
# The chunks cross the runner twice (to the shuffle and back out of its state), and on Flink
# that byte copying was most of the JVM's work; zstd makes a chunk several times smaller for
# little Python time per row (measured: benchmarks/README.md, "Where the time goes").
CHUNK_OPTIONS = pa.ipc.IpcWriteOptions(compression='zstd')
_SAFE_NAME = re.compile(r'[^A-Za-z0-9_.-]+')


def safe_path_component(text: str) -> str:
  """A value usable as one path component: record content must never steer output paths.

  Never a leading '.' or '_' either: Parquet readers (pyarrow, Spark) skip such files as
  hidden, so a site of "../x" or "_x" would make its whole output invisible.
  """
  cleaned = _SAFE_NAME.sub('_', str(text)).strip('._') or 'x'
  return cleaned[:64]


def new_run_id() -> str:
  """Start time + random suffix: sorts by time, never collides with another run's files."""
  now = datetime.datetime.now(datetime.timezone.utc)
  return f'{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}'


def event_date(when: Any) -> str:
  """The ``dt=`` folder name of a time: always YYYY-MM-DD with four digits of year (strftime
  writes year 997 as '997'), by the UTC date; 'unknown' for what is not a time or has no UTC
  date (a naive time is taken as UTC, as parsing takes it)."""
  if not isinstance(when, datetime.datetime):
    return 'unknown'
  try:
    if when.tzinfo is not None:
      when = when.astimezone(datetime.timezone.utc)
  except (OverflowError, ValueError):
    return 'unknown'
  return f'{when.year:04d}-{when.month:02d}-{when.day:02d}'


@dataclasses.dataclass(frozen=True)
class ParquetFolder:
  """Where one output's files go, what their columns are, and which field dates them."""
  directory: str
  schema: pa.Schema
  time_field: str


class _ArrowChunksFn(beam.DoFn):
  """Rows and RecordBatches of one folder -> one Arrow IPC chunk per (folder, date, shard)
  and bundle: ``((folder, '2024-03-01', 0), b'<Arrow IPC stream>')``.

  The files are grouped by (folder, date, shard), so everything written crosses a shuffle;
  sending one compressed Arrow chunk per group and bundle instead of one pickled dict per row
  is most of the sink's cost saved. A bundle's chunks are committed with the bundle, so a
  checkpoint never loses buffered rows.
  """

  def __init__(self, folder: str, schema: pa.Schema, time_field: str, num_shards: int):
    self._folder = folder
    self._schema = schema
    self._time_field = time_field
    self._num_shards = num_shards

  def start_bundle(self):
    self._tables = collections.defaultdict(list)
    self._rows = collections.defaultdict(list)
    self._timestamp = None

  def process(self, element, timestamp=beam.DoFn.TimestampParam):
    if self._timestamp is None or timestamp < self._timestamp:
      self._timestamp = timestamp
    if not isinstance(element, RecordBatch):
      self._rows[self._key(element)].append(element)
      return
    table = element.to_arrow(self._schema)
    shards = ([0] * len(element) if self._num_shards == 1
              else [self._shard(u) for u in element.columns['uuid']])
    keys = list(zip(self._dates(element, table), shards))
    distinct = set(keys)
    if len(distinct) == 1:
      self._tables[keys[0]].append(table)
      return
    for key in distinct:
      self._tables[key].append(table.filter(pa.array([k == key for k in keys])))

  def _dates(self, element: RecordBatch, table: pa.Table) -> list[str]:
    """:func:`event_date` of each record, from the table's timestamps (UTC, as event_date's
    dates are): one call per distinct day instead of one per record."""
    times = element.columns[self._time_field]
    column = table.column(self._time_field)
    if not times or not pa.types.is_timestamp(column.type) or column.null_count:
      return [event_date(t) for t in times]
    per_day = {'s': 86_400, 'ms': 86_400_000, 'us': 86_400_000_000,
               'ns': 86_400_000_000_000}[column.type.unit]
    days = np.floor_divide(column.cast(pa.int64()).to_numpy(), per_day)
    if days.min() == days.max():
      return [event_date(times[0])] * len(times)
    _, first, which = np.unique(days, return_index=True, return_inverse=True)
    names = [event_date(times[i]) for i in first.tolist()]
    return [names[i] for i in which.tolist()]

  def finish_bundle(self):
    for key in set(self._tables) | set(self._rows):
      tables = self._tables.get(key, [])
      if key in self._rows:
        tables.append(pa.Table.from_pylist(self._rows[key], self._schema))
      sink = pa.BufferOutputStream()
      with pa.ipc.new_stream(sink, self._schema, options=CHUNK_OPTIONS) as writer:
        for table in tables:
          writer.write_table(table)
      yield GlobalWindows.windowed_value(((self._folder, ) + key, sink.getvalue().to_pybytes()),
                                         self._timestamp)

  def _key(self, row):
    # Stable per row (uuid, event id, or a dead letter's payload), so a retry lands alike.
    identity = row.get('uuid') or row.get('event_id') or row.get('payload') or b''
    return event_date(row.get(self._time_field)), self._shard(identity)

  def _shard(self, identity) -> int:
    if self._num_shards == 1:
      return 0
    return zlib.crc32(identity if isinstance(identity, bytes) else identity.encode()) % (
        self._num_shards)


class _WriteGroupFn(beam.DoFn):
  """((folder, date, shard), Arrow IPC chunks) -> one Parquet file under that folder's
  directory, written to a temporary name and renamed; counted as ``<folder>_rows`` and
  ``<folder>_files``."""

  def __init__(self, directories: Mapping[str, str], file_prefix: str):
    self._directories = dict(directories)
    self._file_prefix = file_prefix
    self._counters = {
        folder: (Metrics.counter('WritePartitionedParquet', f'{folder}_rows'),
                 Metrics.counter('WritePartitionedParquet', f'{folder}_files'))
        for folder in self._directories}

  def process(self, element, pane=beam.DoFn.PaneInfoParam):
    (folder, date, shard), chunks = element
    directory = FileSystems.join(self._directories[folder], partition_name(date))
    name = file_name(self._file_prefix, pane.index, shard)
    final_path = FileSystems.join(directory, name)
    temp_path = FileSystems.join(directory, in_progress_name(name))
    count = self._write(temp_path, chunks)
    if count == 0:
      FileSystems.delete([temp_path])
      return
    FileSystems.rename([temp_path], [final_path])
    rows, files = self._counters[folder]
    rows.inc(count)
    files.inc()
    yield final_path

  @staticmethod
  def _write(path: str, chunks: Iterable[bytes]) -> int:
    count = 0
    pending, pending_rows = [], 0
    with FileSystems.create(path) as handle:
      writer = None
      for chunk in chunks:
        table = pa.ipc.open_stream(chunk).read_all()
        pending.append(table)
        pending_rows += table.num_rows
        if pending_rows >= ROW_BATCH:
          # Row groups of ROW_BATCH rows, with at most that many rows held at once.
          writer = writer or pq.ParquetWriter(handle, table.schema, compression='zstd')
          writer.write_table(pa.concat_tables(pending), row_group_size=ROW_BATCH)
          count += pending_rows
          pending, pending_rows = [], 0
      if pending:
        writer = writer or pq.ParquetWriter(handle, pending[0].schema, compression='zstd')
        writer.write_table(pa.concat_tables(pending), row_group_size=ROW_BATCH)
        count += pending_rows
      if writer is not None:
        writer.close()
    return count


class WritePartitionedParquet(beam.PTransform):
  """{folder: dict rows or RecordBatches} -> Parquet files under
  ``folders[folder].directory/dt=YYYY-MM-DD/``, every folder through one shuffle.

  Returns the PCollection of written file paths; counts each folder's rows and files as Beam
  metrics ``<folder>_rows`` and ``<folder>_files``.
  """

  def __init__(self, folders: Mapping[str, ParquetFolder], *, roll_seconds: float = 60,
               num_shards: int = 1, site: str = 'local', run_id: Optional[str] = None):
    super().__init__()
    self._folders = dict(folders)
    # One trigger object for every folder: Beam's triggers compare by identity, and the
    # Flatten of the folders' chunks warns of differing windowing unless they share it.
    self._roll_trigger = trigger.Repeatedly(trigger.AfterProcessingTime(roll_seconds))
    self._num_shards = max(1, num_shards)
    # The run id is fixed when the pipeline is built, so every worker names files alike.
    self._file_prefix = f'{safe_path_component(site)}-{run_id or new_run_id()}'

  def expand(self, rows_by_folder):
    unknown = set(rows_by_folder) - set(self._folders)
    if unknown:
      raise ValueError(f'no ParquetFolder for {sorted(unknown)}')
    chunks = [
        rows | f'Roll[{name}]' >> self._roll(rows.is_bounded)
        | f'ToArrowChunks[{name}]' >> beam.ParDo(_ArrowChunksFn(
            name, self._folders[name].schema, self._folders[name].time_field,
            self._num_shards))
        for name, rows in rows_by_folder.items()]
    directories = {name: folder.directory for name, folder in self._folders.items()}
    return (
        chunks
        | 'AllFolders' >> beam.Flatten()
        | 'GroupIntoFiles' >> beam.GroupByKey()
        | 'WriteFiles' >> beam.ParDo(_WriteGroupFn(directories, self._file_prefix)))

  def _roll(self, is_bounded: bool) -> beam.WindowInto:
    if is_bounded:
      # A bounded input is written once, at its end (batch runners have no processing clock).
      return beam.WindowInto(window.GlobalWindows())
    return beam.WindowInto(window.GlobalWindows(), trigger=self._roll_trigger,
                           accumulation_mode=trigger.AccumulationMode.DISCARDING)
