"""Reading KDD Cup 1999 CSV files (kddcup.data, kddcup.data_10_percent, plain or gzip).

Input, one connection per line, no header, 42 fields, the label last with a trailing dot::

    0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,...,0.00,normal.

Output: a DataFrame with the 41 ``KDD_FEATURES`` columns in file order, typed as in
:data:`schemas.records.NETWORK` (int64 counts, float64 rates, strings for protocol_type,
service and flag), plus ``label`` without its dot (``'normal'``, ``'smurf'``).
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from schemas.records import FLOAT, INT, KDD_FEATURES, NETWORK

LABEL = 'label'
_ARROW = {INT: pa.int64(), FLOAT: pa.float64()}
_GZIP_MAGIC = b'\x1f\x8b'


def kdd_column_types() -> dict[str, pa.DataType]:
  """Arrow type of each CSV column, derived from the network schema."""
  types = {name: _ARROW.get(NETWORK.field(name).kind, pa.string()) for name in KDD_FEATURES}
  types[LABEL] = pa.string()
  return types


def frame_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
  """Gives string columns pandas' default string dtype, so that frames read from a file and
  frames synthesised in memory compare equal column by column."""
  for name in NETWORK.categorical_features + (LABEL,):
    frame[name] = frame[name].astype('str')
  return frame


def read_kdd_csv(path: str | os.PathLike) -> pd.DataFrame:
  """Reads a whole KDD CSV file into memory with pyarrow's multi-threaded CSV reader.

  Gzip is recognised by its magic bytes, whatever the file name. Raises ``ValueError`` when a
  line does not have 42 fields or a number does not parse.
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    compressed = f.read(2) == _GZIP_MAGIC
  columns = list(KDD_FEATURES) + [LABEL]
  read_options = pacsv.ReadOptions(column_names=columns, block_size=1 << 24)
  convert_options = pacsv.ConvertOptions(column_types=kdd_column_types(),
                                         strings_can_be_null=False)
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
