"""Training data for the retrain job: archive / KDD CSV batches -> one normalised table layout.

Every input batch (a pyarrow Table: an archive row group, or a block of a KDD CSV file) is
turned by :func:`prepare_batch` into the detector's raw feature columns plus a few internal
columns the retrain job works with:

| column     | meaning                                                                            |
| ---------- | ---------------------------------------------------------------------------------- |
| ``_key``   | uint64 hash of the record's ``record_id`` (``uuid`` in archives older than record  |
|            | ids, and KDD CSV files); the dedup key, it also orders the uniform sample          |
| ``_group`` | uint64 hash of what must not straddle train and test: the key for network records, |
|            | (machine, CMD_PID) for host records, whose snapshots of one process are alike      |
| ``_y``     | 1 attack, 0 normal, -1 unknown                                                      |
| ``_label`` | the label as text (``smurf``, ``normal``, ``1``), for per-family detection rates   |
| ``_time``  | event time, microseconds since the epoch (null when unknown)                       |

Deduplication is by ``_key``: two rows with the same record id are the same record (an
at-least-once replay). Not by uuid alone: a producer can send two different records with one
uuid, and one would hide the other (transforms/ids.py).

Rows lacking a field their schema requires (:func:`required_columns`: a network record
without KDD's basic features, which the stream job refuses today but older archives may
hold) are skipped: the model must not learn from records that are not records. Because the uniform training sample is "the rows with the smallest ``_key``", every
copy of a uuid is either in the sample or not, so deduplicating the sample is the same as
sampling the deduplicated data, and neither needs all rows in one place.

Splits and folds come from ``_group`` through a second mixing hash, so they are deterministic
(a rerun on the same data makes the same held-out set; the champion/challenger gate compares
both models on it) and independent of the sampling order.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import FLOAT, INT, ISO8601, SCHEMAS, STR, UNIX_SECONDS, RecordSchema

KEY, GROUP, Y, LABEL, TIME = '_key', '_group', '_y', '_label', '_time'
INTERNAL = (KEY, GROUP, Y, LABEL, TIME)
NORMAL_LABELS = frozenset({'normal', '0', 'false', 'benign'})
SPLITS = ('train', 'calibration', 'test')
_ARROW = {INT: pa.int64(), FLOAT: pa.float64(), STR: pa.string()}
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def archive_columns(detector: str) -> list[str]:
  """The archive columns the retrain job reads (projection: nothing else leaves the file)."""
  schema = SCHEMAS[detector]
  wanted = list(schema.feature_columns) + [schema.label_column, 'uuid', 'record_id',
                                            'event_time'] + list(schema.join_key)
  archive = ARCHIVE_SCHEMAS[detector].names
  return [c for c in dict.fromkeys(wanted) if c in archive]


def required_columns(detector: str) -> list[str]:
  """The read columns a usable row must have (the schema's required fields among them)."""
  schema = SCHEMAS[detector]
  read = set(archive_columns(detector))
  return [f.name for f in schema.fields if f.required and f.name in read]


def _with_required(detector: str, table: pa.Table) -> pa.Table:
  """``table`` without the rows that lack a required column (all rows, if it has none)."""
  mask = None
  for name in required_columns(detector):
    if name not in table.column_names:
      return table.slice(0, 0)
    valid = pc.is_valid(table.column(name))
    mask = valid if mask is None else pc.and_(mask, valid)
  if mask is None or pc.all(mask).as_py() is not False:
    return table
  return table.filter(mask)


def prepared_schema(detector: str) -> pa.Schema:
  schema = SCHEMAS[detector]
  fields = [pa.field(c, _ARROW[schema.field(c).kind]) for c in schema.feature_columns]
  return pa.schema(fields + [
      pa.field(KEY, pa.uint64()), pa.field(GROUP, pa.uint64()), pa.field(Y, pa.int8()),
      pa.field(LABEL, pa.string()), pa.field(TIME, pa.int64())])


# ---- hashing -----------------------------------------------------------------------------------

def hash_strings(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
  """A stable 64-bit hash of each string (pandas' SipHash with its fixed key)."""
  array = np.asarray(pc.fill_null(values.cast(pa.string()), '').to_numpy(zero_copy_only=False),
                     dtype=object)
  return pd.util.hash_array(array, categorize=False).astype(np.uint64)


def mix(h: np.ndarray, salt: int) -> np.ndarray:
  """splitmix64 of ``h ^ salt``: decorrelates splits and folds from the sampling order."""
  with np.errstate(over='ignore'):
    z = (np.asarray(h, dtype=np.uint64) ^ np.uint64(salt)) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def unit_interval(h: np.ndarray, salt: int) -> np.ndarray:
  return (mix(h, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_of(group: np.ndarray, test_fraction: float = 0.2,
             calibration_fraction: float = 0.1) -> np.ndarray:
  """0 train, 1 calibration (alert threshold), 2 test (metrics and the gate)."""
  u = unit_interval(group, 0x5EED5EED)
  return np.where(u < test_fraction, 2,
                  np.where(u < test_fraction + calibration_fraction, 1, 0)).astype(np.int8)


def fold_of(group: np.ndarray, folds: int) -> np.ndarray:
  return (mix(group, 0xF01D) % np.uint64(folds)).astype(np.int64)


def subsample_order(key: np.ndarray) -> np.ndarray:
  """A deterministic random order of rows (for "the first n rows" subsamples)."""
  return np.argsort(mix(key, 0x0DDBA11), kind='stable')


# ---- labels --------------------------------------------------------------------------------

def normalise_labels(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
  """Label text without KDD's trailing dot, lower case; and 1 attack / 0 normal / -1 unknown.

  Network labels are names (``normal.``, ``smurf.``); host labels are 0/1 integers.
  """
  text = pc.utf8_lower(pc.utf8_trim_whitespace(values.cast(pa.string())))
  text = pc.utf8_rtrim(text, characters='.')
  text = pc.if_else(pc.equal(text, ''), pa.scalar(None, pa.string()), text)
  text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
  as_object = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
  known = pd.notna(as_object)
  normal = np.isin(as_object, list(NORMAL_LABELS))
  y = np.where(~known, -1, np.where(normal, 0, 1)).astype(np.int8)
  return text, y


# ---- batches ---------------------------------------------------------------------------------

def _column(table: pa.Table, name: str, arrow_type: pa.DataType) -> pa.Array:
  if name not in table.column_names:
    return pa.nulls(table.num_rows, arrow_type)
  column = table.column(name).combine_chunks()
  if column.type != arrow_type:
    column = column.cast(arrow_type, safe=False)
  return column


def _content_hash(table: pa.Table, names: list[str]) -> np.ndarray:
  frame = table.select([n for n in names if n in table.column_names]).to_pandas()
  return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def prepare_batch(detector: str, table: pa.Table) -> pa.Table:
  """An archive (or KDD CSV) batch -> the :func:`prepared_schema` layout."""
  schema = SCHEMAS[detector]
  table = _with_required(detector, table)
  n = table.num_rows
  columns = [_column(table, c, _ARROW[schema.field(c).kind]) for c in schema.feature_columns]
  # Keys: the record id, else (older archives, KDD CSV) the uuid; a record without either
  # (there should be none) is keyed by its content.
  identity = pc.coalesce(_column(table, 'record_id', pa.string()),
                         _column(table, 'uuid', pa.string()))
  key = hash_strings(identity)
  missing = np.asarray(pc.is_null(identity).to_numpy(zero_copy_only=False), dtype=bool)
  if missing.any():
    content = _content_hash(table, list(schema.feature_columns) + ['event_time'])
    key = np.where(missing, mix(content, 0xC0DE), key)
  if not schema.join_key:
    group = key
  else:
    # The records of one joined entity (a host's process) are alike: one split for all.
    entity = pc.binary_join_element_wise(
        *[_column(table, c, pa.string()) for c in schema.join_key], '|',
        null_handling='replace', null_replacement='')
    group = hash_strings(entity)
  label, y = normalise_labels(_column(table, schema.label_column, pa.string()))
  if 'event_time' in table.column_names:
    event_time = pc.cast(table.column('event_time').combine_chunks(), pa.timestamp('us', 'UTC'))
    time = pc.cast(event_time, pa.int64())
  else:
    time = pa.nulls(n, pa.int64())
  return pa.Table.from_arrays(
      columns + [pa.array(key, pa.uint64()), pa.array(group, pa.uint64()),
                 pa.array(y, pa.int8()), label, time],
      schema=prepared_schema(detector))


def dedup_smallest(table: pa.Table, k: Optional[int] = None) -> pa.Table:
  """One row per ``_key``, sorted by ``_key``, at most ``k`` rows (the smallest keys)."""
  if table.num_rows == 0:
    return table
  keys = table.column(KEY).to_numpy()
  order = np.argsort(keys, kind='stable')
  ordered = keys[order]
  first = np.ones(len(order), dtype=bool)
  first[1:] = ordered[1:] != ordered[:-1]
  chosen = order[first]
  if k is not None:
    chosen = chosen[:k]
  return table.take(pa.array(chosen))


# ---- model input -----------------------------------------------------------------------------

def feature_frame(schema: RecordSchema, table_or_frame) -> pd.DataFrame:
  """The model input, typed as :func:`model.features.frame_from_records` types it for serving:
  numeric columns float64, strings as they came (missing as NaN)."""
  frame = (table_or_frame.to_pandas() if isinstance(table_or_frame, pa.Table)
           else table_or_frame)
  frame = frame.loc[:, list(schema.feature_columns)].copy()
  for name in schema.numeric_features:
    frame[name] = pd.to_numeric(frame[name], errors='coerce').astype('float64')
  for name in schema.categorical_features:
    frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
  return frame.reset_index(drop=True)


def time_range(micros) -> list[Optional[str]]:
  """[first, last] event time (ISO 8601) of microsecond timestamps; [None, None] if none."""
  values = pd.to_numeric(pd.Series(micros), errors='coerce').dropna()
  if values.empty:
    return [None, None]
  as_time = pd.to_datetime(values.astype('int64'), unit='us', utc=True)
  return [as_time.min().isoformat(), as_time.max().isoformat()]


# ---- archives for tests, benchmarks and backfills ----------------------------------------------

def archive_table(detector: str, frame: pd.DataFrame, *, start: datetime.datetime,
                  seconds_per_row: float = 0.01, site: str = 'site-a',
                  uuid_prefix: str = '', first_index: int = 0) -> pa.Table:
  """Cleaned records (a frame with the stream's record columns, e.g. from the generators)
  as rows of ``archive/<detector>/`` (ARCHIVE_SCHEMAS), the layout the stream job writes.

  Missing columns are filled like the stream fills them: a uuid per row (unless given), the
  site, event times ``seconds_per_row`` apart from ``start`` (host records use their ``ts``),
  no prediction yet."""
  schema = ARCHIVE_SCHEMAS[detector]
  records = SCHEMAS[detector]
  n = len(frame)
  frame = frame.reset_index(drop=True)
  index = np.arange(first_index, first_index + n)
  start_us = int(start.timestamp() * 1_000_000)
  data: dict[str, Any] = {}
  if records.time_format == UNIX_SECONDS:
    micros = frame[records.time_field].to_numpy(dtype=np.int64) * 1_000_000
  else:
    micros = start_us + (index * seconds_per_row * 1e6).astype(np.int64)
  # The derived join key, as the stream's enrichment writes it (transforms/enrich.py).
  data['CMD_PID'] = (frame['CMD'].astype(str) + '_' + frame['PID'].astype(str)
                     if 'CMD_PID' in records.join_key else None)
  event_time = pd.to_datetime(micros, unit='us', utc=True)
  data.update({
      'uuid': [f'{uuid_prefix}{i:012d}' for i in index],
      'site': site, 'event_time': event_time, 'processing_time': event_time,
      'prediction': pd.array([None] * n, dtype='Int64'),
      'score': np.full(n, np.nan), 'model_version': None,
  })
  if records.time_format == ISO8601:
    data[records.time_field] = event_time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')
  # Message counters the stream fills when a record has none (only archives that hold them).
  data.update(sequence_id=index, index=index)
  arrays = []
  for field in schema:
    if field.name in frame.columns:
      values = frame[field.name]
    else:
      values = data.get(field.name)
    arrays.append(_to_arrow(values, field.type, n))
  return pa.Table.from_arrays(arrays, schema=schema)


def _to_arrow(values, arrow_type: pa.DataType, n: int) -> pa.Array:
  if values is None or isinstance(values, (str, int, float)):
    return pa.array([values] * n, type=arrow_type)
  if isinstance(values, pd.Series) and pa.types.is_string(arrow_type):
    values = values.astype(object).where(values.notna(), None)
  return pa.array(values, type=arrow_type, from_pandas=True)
