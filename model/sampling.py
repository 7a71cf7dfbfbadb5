"""The deduplicated uniform training sample, built without moving big records between workers.

A sample is "the ``k`` distinct records with the smallest ``_key``" (uuid hash): uniform
without replacement, deduplicated (copies of a uuid share a key), and the same whatever the
order or grouping the records come in. :class:`BottomK` keeps it in O(k) memory.

Workers never ship tables through a shuffle (Flink's batch sorter refuses records of tens of
megabytes, and every runner pays to serialise them): each bundle of input batches is reduced
to a *part* -- its own bottom-k (a Parquet file) and its distinct keys (a .npy file, 8 bytes a
record) -- written to the staging dir, and only the part's description travels. One step then
merges the parts: the sample, and exact counts of rows and distinct uuids. A worker remembers
its last cut (the k-th smallest key it has seen), which holds for every later bundle too, so
after the first ``k`` records most rows are dropped as soon as they are read.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any, Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from model import dataset

log = logging.getLogger(__name__)


class BottomK:
  """The ``k`` distinct rows with the smallest ``_key`` among those added."""

  def __init__(self, k: int, cut: Optional[int] = None):
    self.k = k
    self.cut = cut  # no row with a larger key can be in the result
    self._tables: list[pa.Table] = []
    self._rows = 0

  def add(self, table: pa.Table) -> None:
    if self.cut is not None:
      table = table.filter(pc.less_equal(table.column(dataset.KEY),
                                         pa.scalar(self.cut, pa.uint64())))
    if table.num_rows:
      self._tables.append(table)
      self._rows += table.num_rows
      if self._rows > 2 * self.k:
        self._compact()

  def _compact(self) -> None:
    if len(self._tables) == 0:
      return
    table = dataset.dedup_smallest(pa.concat_tables(self._tables), self.k)
    self._tables, self._rows = [table], table.num_rows
    if table.num_rows >= self.k:
      last = int(table.column(dataset.KEY)[-1].as_py())
      self.cut = last if self.cut is None else min(self.cut, last)

  def result(self, schema: pa.Schema) -> pa.Table:
    self._compact()
    return self._tables[0] if self._tables else schema.empty_table()


class PartWriter:
  """One bundle's share: counts, distinct keys and bottom-k, written as a part."""

  def __init__(self, detector: str, k: int, parts_dir: str, cut: Optional[int] = None):
    self.detector = detector
    self.parts_dir = parts_dir
    self.sample = BottomK(k, cut)
    self.keys: list[np.ndarray] = []
    self._pending = 0
    self.rows = self.labelled = self.attacks = 0
    self.min_time: Optional[int] = None
    self.max_time: Optional[int] = None

  def add(self, table: pa.Table) -> None:
    self.rows += table.num_rows
    keys = np.unique(table.column(dataset.KEY).to_numpy())
    self.keys.append(keys)
    self._pending += len(keys)
    if self._pending > max(2_000_000, len(self.keys[0])):  # amortised: each key sorted O(1) times
      self.keys = [np.unique(np.concatenate(self.keys))]
      self._pending = 0
    y = table.column(dataset.Y).to_numpy()
    self.labelled += int((y >= 0).sum())
    self.attacks += int((y == 1).sum())
    times = table.column(dataset.TIME)
    if times.null_count < len(times):
      low, high = (v.as_py() for v in pc.min_max(times).values())
      self.min_time = low if self.min_time is None else min(self.min_time, low)
      self.max_time = high if self.max_time is None else max(self.max_time, high)
    self.sample.add(table)

  def write(self) -> Optional[dict[str, Any]]:
    """Writes the part files; returns the part's description (None if it saw no rows)."""
    if self.rows == 0:
      return None
    name = uuid.uuid4().hex
    sample = self.sample.result(dataset.prepared_schema(self.detector))
    sample_path = FileSystems.join(self.parts_dir, f'{name}.parquet')
    buffer = io.BytesIO()
    pq.write_table(sample, buffer, compression='zstd')
    _write(sample_path, buffer.getvalue())
    keys_path = FileSystems.join(self.parts_dir, f'{name}.keys.npy')
    buffer = io.BytesIO()
    np.save(buffer, np.unique(np.concatenate(self.keys)))
    _write(keys_path, buffer.getvalue())
    return {'sample': sample_path, 'keys': keys_path, 'rows': self.rows,
            'sample_rows': sample.num_rows, 'labelled': self.labelled, 'attacks': self.attacks,
            'min_time': self.min_time, 'max_time': self.max_time}


def merge_parts(detector: str, k: int, parts: Iterable[dict[str, Any]]
                ) -> tuple[pa.Table, dict[str, Any]]:
  """All parts -> (the sample, input statistics). Reads one part at a time."""
  parts = [p for p in parts if p]
  sample = BottomK(k)
  keys = []
  for part in parts:
    with FileSystems.open(part['sample']) as f:
      sample.add(pq.read_table(pa.BufferReader(f.read())))
    with FileSystems.open(part['keys']) as f:
      keys.append(np.load(io.BytesIO(f.read())))
  distinct = len(np.unique(np.concatenate(keys))) if keys else 0
  rows = sum(p['rows'] for p in parts)
  times = [t for p in parts for t in (p['min_time'], p['max_time']) if t is not None]
  stats = {'rows': rows, 'distinct': distinct, 'duplicates': rows - distinct,
           'labelled_rows': sum(p['labelled'] for p in parts),
           'attack_rows': sum(p['attacks'] for p in parts),
           'time_range': dataset.time_range([min(times), max(times)] if times else []),
           'parts': len(parts), 'part_rows': sum(p['sample_rows'] for p in parts)}
  log.info('merged %d sample parts (%d rows kept of %d read, %d duplicate uuids)', len(parts),
           stats['part_rows'], rows, stats['duplicates'])
  return sample.result(dataset.prepared_schema(detector)), stats


def delete_parts(parts: Iterable[dict[str, Any]]) -> None:
  paths = [p[f] for p in parts if p for f in ('sample', 'keys')]
  if paths:
    FileSystems.delete(paths)


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)
