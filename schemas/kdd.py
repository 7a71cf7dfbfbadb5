"""The KDD Cup 1999 CSV format (kddcup.data, kddcup.data_10_percent, plain or gzip), read by
the traffic generator (a whole file as a DataFrame) and by the retrain job (a stream of
pyarrow tables), so both agree on columns, types and labels.

One connection per line, no header, 42 fields, the label last with a trailing dot::

    0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,...,0.00,normal.

Columns: the 41 ``KDD_FEATURES`` in file order, typed as in :data:`schemas.records.NETWORK`
(int64 counts, float64 rates, strings for protocol_type, service and flag), plus ``label``.
Gzip is recognised by its magic bytes, whatever the file name.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from schemas.records import FLOAT, INT, KDD_FEATURES, NETWORK

LABEL = 'label'
COLUMNS = tuple(KDD_FEATURES) + (LABEL,)
GZIP_MAGIC = b'\x1f\x8b'
_ARROW = {INT: pa.int64(), FLOAT: pa.float64()}


def kdd_column_types() -> dict[str, pa.DataType]:
  """Arrow type of each CSV column, derived from the network schema."""
  types = {name: _ARROW.get(NETWORK.field(name).kind, pa.string()) for name in KDD_FEATURES}
  types[LABEL] = pa.string()
  return types


def _options(block_size: int) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
  return (pacsv.ReadOptions(column_names=list(COLUMNS), block_size=block_size),
          pacsv.ConvertOptions(column_types=kdd_column_types(), strings_can_be_null=False))


def frame_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
  """Gives string columns pandas' default string dtype, so that frames read from a file and
  frames synthesised in memory compare equal column by column."""
  for name in NETWORK.categorical_features + (LABEL,):
    frame[name] = frame[name].astype('str')
  return frame


def read_kdd_csv(path: str | os.PathLike) -> pd.DataFrame:
  """Reads a whole KDD CSV file into memory with pyarrow's multi-threaded CSV reader; the
  label without its dot (``'normal'``, ``'smurf'``).

  Raises ``ValueError`` when a line does not have 42 fields or a number does not parse.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    compressed = f.read(2) == GZIP_MAGIC
  read_options, convert_options = _options(1 << 24)
  source = pa.input_stream(path, compression='gzip' if compressed else None)
  try:
    table = pacsv.read_csv(source, read_options=read_options, convert_options=convert_options)
  except pa.ArrowInvalid as e:
    raise ValueError(f'{path}: not a KDD Cup 1999 CSV file (42 fields, no header): {e}') from e
  finally:
    source.close()
  labels = pc.utf8_rtrim(table.column(LABEL), characters='.')
  table = table.set_column(table.schema.get_field_index(LABEL), LABEL, labels)
  return frame_dtypes(table.to_pandas())


def kdd_csv_batches(handle, name: str, block_size: int = 1 << 24) -> Iterator[pa.Table]:
  """Streams a KDD CSV file (an open binary file object) as tables in the archive's column
  names, labels as written, with ``uuid`` = ``<file name>:<line number>`` (a CSV line has no
  uuid; re-reading the same file therefore deduplicates, distinct lines never do)."""
  head = handle.read(2)
  stream = pa.PythonFile(_Prepend(head, handle), mode='r')
  if head == GZIP_MAGIC:
    stream = pa.CompressedInputStream(stream, 'gzip')
  read_options, convert_options = _options(block_size)
  reader = pacsv.open_csv(stream, read_options=read_options, convert_options=convert_options)
  base = os.path.basename(name)
  line = 0
  for batch in reader:
    table = pa.Table.from_batches([batch])
    ids = pc.binary_join_element_wise(
        pa.scalar(base + ':'), pc.cast(pa.array(np.arange(line + 1, line + 1 + len(table))),
                                       pa.string()), '')
    line += len(table)
    yield table.append_column('uuid', ids)


class _Prepend:
  """A read-only file object: ``head`` then the rest of ``handle`` (to sniff gzip's magic on
  streams that cannot seek)."""

  def __init__(self, head: bytes, handle):
    self._head = head
    self._handle = handle
    self.closed = False

  def read(self, size: int = -1) -> bytes:
    if self._head:
      if size is None or size < 0:
        data, self._head = self._head + self._handle.read(), b''
        return data
      data, self._head = self._head[:size], self._head[size:]
      if len(data) < size:
        data += self._handle.read(size - len(data))
      return data
    return self._handle.read(size)

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return False

  def close(self) -> None:
    self.closed = True
    self._handle.close()
