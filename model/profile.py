"""The normal profile a retrain stores beside its model: what normal traffic looks like, feature
by feature, so that every alert can say why it is unlike it.

For each numeric feature the profile keeps the median and a normal range (the 1st to the 99th
percentile of the reference rows); for each categorical feature the frequencies of its values.
:meth:`NormalProfile.reasons` explains a batch of records with vectorised numpy only (no model
call): per record, the few features furthest outside their normal range, each with the
record's value, the range and a human text for it.

How far outside is measured on the same log scale the model's features use
(:func:`model.features.signed_log1p`: byte counts span ten orders of magnitude), in units of the
range's width, with a floor so that a feature whose normal range is a single value (0 failed
logins) still ranks a 1 above a 0.001 elsewhere. A categorical value is deviant when less than
:data:`RARE_SHARE` of the reference rows have it; the rarer, the further, and an unseen one as
far as a count sixty times beyond its range.

The profile is a JSON file (``normal_profile.json``) in the model's version folder, listed with
its sha256 in the signed manifest (model/registry.py), read back by :func:`load_profile`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from model import registry
from model.features import signed_log1p
from schemas.records import FLOAT, RecordSchema

PROFILE_FILE = 'normal_profile.json'
FORMAT_VERSION = 1
# The normal range: these percentiles of the reference rows.
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.0
# A range narrower than this (on the log scale) counts as this wide.
MIN_WIDTH = 0.1
# A category at least this common among the reference rows is normal.
RARE_SHARE = 0.01
# How far a categorical value never seen in the reference rows lies (and the most for a rare one):
# as far as a count sixty times beyond its normal range (e ** 4).
UNSEEN_DEVIATION = 4.0
# Categories kept per feature, most common first (the others count as unseen).
MAX_CATEGORIES = 200
# A profile file is a few tens of kilobytes; anything much larger is not one.
MAX_PROFILE_BYTES = 4 << 20


def _number_text(value: float, kind: str) -> str:
  if kind == FLOAT:
    return f'{value:,.2f}'
  return f'{value:,.0f}' if abs(value) < 1e15 else f'{value:.3g}'


def _json_value(value: Any, kind: str) -> Any:
  """A record's value as JSON can carry it: an int for integral counts, a float, or None."""
  if value is None:
    return None
  try:
    number = float(value)
  except (TypeError, ValueError):
    return str(value)[:200]
  if not math.isfinite(number):
    return None
  if kind != FLOAT and number.is_integer() and abs(number) < 2 ** 53:
    return int(number)
  return number


class NormalProfile:
  """Per-feature medians, normal ranges and category frequencies of a detector's reference rows.

  ``numeric``: {feature: {'kind', 'median', 'low', 'high'}}; ``categorical``: {feature:
  {'shares': {value: share}, 'rows': n}}; ``rows``: the number of reference rows.
  """

  def __init__(self, stream: str, rows: int, numeric: dict[str, dict[str, Any]],
               categorical: dict[str, dict[str, Any]]):
    self.stream = stream
    self.rows = int(rows)
    self.numeric = numeric
    self.categorical = categorical
    self._prepare()

  def _prepare(self) -> None:
    names = list(self.numeric)
    self._numeric_names = names
    low = np.array([self.numeric[n]['low'] for n in names], dtype=float)
    high = np.array([self.numeric[n]['high'] for n in names], dtype=float)
    self._low, self._high = low, high
    self._tlow, self._thigh = signed_log1p(low), signed_log1p(high)
    self._width = np.maximum(self._thigh - self._tlow, MIN_WIDTH)
    self._shares = {n: dict(c['shares']) for n, c in self.categorical.items()}
    self._usual = {}
    for n, c in self.categorical.items():
      shares = c['shares']
      if shares:
        top = max(shares, key=shares.get)
        self._usual[n] = f"usually {top!r} ({shares[top]:.0%})"
      else:
        self._usual[n] = 'no reference rows'

  @classmethod
  def fit(cls, schema: RecordSchema, frame: pd.DataFrame) -> 'NormalProfile':
    """The profile of ``frame`` (the reference rows, the schema's raw feature columns)."""
    numeric = {}
    for name in schema.numeric_features:
      values = pd.to_numeric(frame[name], errors='coerce').to_numpy(dtype=float)
      values = values[np.isfinite(values)]
      if len(values):
        low, median, high = np.percentile(values, [LOW_PERCENTILE, 50.0, HIGH_PERCENTILE])
      else:
        low = median = high = float('nan')
      numeric[name] = {'kind': schema.field(name).kind, 'median': float(median),
                       'low': float(low), 'high': float(high)}
    categorical = {}
    for name in schema.categorical_features:
      column = frame[name]
      column = column[column.notna()].astype(str)
      counts = column.value_counts()
      rows = int(counts.sum())
      shares = {str(k): float(v) / rows for k, v in counts.head(MAX_CATEGORIES).items()}
      categorical[name] = {'shares': shares, 'rows': rows}
    return cls(schema.stream, len(frame), numeric, categorical)

  def to_json(self) -> dict[str, Any]:
    def number(x):
      return None if x is None or not math.isfinite(x) else x
    return {
        'format': FORMAT_VERSION, 'stream': self.stream, 'rows': self.rows,
        'normal_range': f'{LOW_PERCENTILE:g}th to {HIGH_PERCENTILE:g}th percentile',
        'numeric': {n: {'kind': v['kind'], 'median': number(v['median']),
                        'low': number(v['low']), 'high': number(v['high'])}
                    for n, v in self.numeric.items()},
        'categorical': self.categorical,
    }

  @classmethod
  def from_json(cls, document: dict[str, Any]) -> 'NormalProfile':
    """The profile :meth:`to_json` wrote; ValueError when ``document`` is not one."""
    try:
      if document.get('format') != FORMAT_VERSION:
        raise ValueError(f'unknown profile format {str(document.get("format"))[:20]!r}')

      def number(x):
        return float('nan') if x is None else float(x)
      numeric = {str(n): {'kind': str(v.get('kind')), 'median': number(v.get('median')),
                          'low': number(v.get('low')), 'high': number(v.get('high'))}
                 for n, v in document['numeric'].items()}
      categorical = {str(n): {'shares': {str(k): float(s) for k, s in v['shares'].items()},
                              'rows': int(v['rows'])}
                     for n, v in document['categorical'].items()}
      return cls(str(document.get('stream')), int(document.get('rows', 0)), numeric,
                 categorical)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      raise ValueError(f'not a normal profile: {type(e).__name__}: {e}') from None

  def to_bytes(self) -> bytes:
    return json.dumps(self.to_json(), sort_keys=True, allow_nan=False).encode('utf-8')

  def numeric_deviation(self, frame: Columns) -> np.ndarray:
    """rows x numeric features: how far outside its normal range each value lies (0 inside
    it, or for a missing value or a column the frame lacks)."""
    n = row_count(frame)
    columns = [_floats(frame[name]) if name in frame else np.full(n, np.nan)
               for name in self._numeric_names]
    if not columns:
      return np.zeros((n, 0))
    values = signed_log1p(np.column_stack(columns))
    with np.errstate(invalid='ignore'):
      outside = np.maximum(self._tlow - values, 0.0) + np.maximum(values - self._thigh, 0.0)
    return np.nan_to_num(outside / self._width, nan=0.0, posinf=0.0, neginf=0.0)

  def categorical_deviation(self, name: str, column: Sequence[Any]) -> np.ndarray:
    """How rare each value of ``column`` is among the reference rows: 0 for a value at least
    :data:`RARE_SHARE` of them have (or a missing one), else log2(RARE_SHARE / its share), at
    most :data:`UNSEEN_DEVIATION` (an unseen value)."""
    shares = self._shares.get(name, {})
    values = np.asarray(column, dtype=object)
    present = ~pd.isna(values)
    share = np.fromiter((shares.get(str(v), 0.0) for v in values), dtype=float,
                        count=len(values))
    with np.errstate(divide='ignore'):
      deviation = np.minimum(np.log2(RARE_SHARE / share), UNSEEN_DEVIATION)
    return np.where(present & (share < RARE_SHARE), deviation, 0.0)

  def reasons(self, frame: Columns, top_k: int = 3) -> list[list[dict[str, Any]]]:
    """Per row of ``frame`` (a DataFrame, or columns as :func:`model.features.feature_arrays`
    makes them: the scoring path's, without pandas' cost per column), up to ``top_k`` features
    unlike the profile, furthest first: ``{'feature', 'value', 'normal_low', 'normal_high',
    'normal', 'deviation'}``. A row whose every value is normal has no reasons."""
    n = row_count(frame)
    names = list(self._numeric_names)
    blocks = [self.numeric_deviation(frame)]
    categorical = [c for c in self.categorical if c in frame]
    for name in categorical:
      blocks.append(self.categorical_deviation(name, frame[name])[:, None])
    names += categorical
    deviation = np.hstack(blocks) if blocks else np.zeros((n, 0))
    if n == 0 or deviation.shape[1] == 0 or top_k <= 0:
      return [[] for _ in range(n)]
    k = min(top_k, deviation.shape[1])
    # The k largest per row, then sorted: argpartition keeps this linear in the features.
    top = np.argpartition(-deviation, k - 1, axis=1)[:, :k]
    top_values = np.take_along_axis(deviation, top, axis=1)
    order = np.argsort(-top_values, axis=1, kind='stable')
    top = np.take_along_axis(top, order, axis=1)
    top_values = np.take_along_axis(top_values, order, axis=1)
    numeric_count = len(self._numeric_names)
    columns = {name: np.asarray(frame[name]) for name in set(names[j] for j in np.unique(top))
               if name in frame}
    out: list[list[dict[str, Any]]] = []
    for i in range(n):
      row = []
      for j, d in zip(top[i], top_values[i]):
        if d <= 0.0:
          break
        name = names[j]
        value = columns[name][i]
        if j < numeric_count:
          spec = self.numeric[name]
          low, high = spec['low'], spec['high']
          row.append({'feature': name, 'value': _json_value(value, spec['kind']),
                      'normal_low': low, 'normal_high': high,
                      'normal': (f"{_number_text(low, spec['kind'])} - "
                                 f"{_number_text(high, spec['kind'])}"),
                      'deviation': round(float(d), 3)})
        else:
          row.append({'feature': name, 'value': str(value)[:200], 'normal_low': None,
                      'normal_high': None, 'normal': self._usual[name],
                      'deviation': round(float(d), 3)})
      out.append(row)
    return out


# A DataFrame, or column name -> a numpy array per column, all of one length.
Columns = Union[pd.DataFrame, Mapping[str, np.ndarray]]


def row_count(frame: Columns) -> int:
  """The rows of ``frame`` (a mapping's length is its columns')."""
  if isinstance(frame, pd.DataFrame):
    return len(frame)
  return len(next(iter(frame.values()))) if frame else 0


def _floats(column: Sequence[Any]) -> np.ndarray:
  """``column`` as float64; a value that is no number becomes NaN."""
  values = np.asarray(column)
  if values.dtype.kind in 'biuf':
    return values.astype(float, copy=False)
  return pd.to_numeric(pd.Series(values), errors='coerce').to_numpy(dtype=float)


def _split_version_dir(path: str) -> tuple[str, str, str]:
  parts = path.replace('\\', '/').rstrip('/').rsplit('/', 2)
  if len(parts) != 3:
    raise ValueError(f'{path!r} is not a version folder <model_dir>/<detector>/<version>')
  return parts[0], parts[1], parts[2]


def load_profile(source: Union[str, 'registry.LoadedModel', Sequence[str]], *,
                 model_dir: Optional[str] = None,
                 public_keys=None) -> Optional[NormalProfile]:
  """The normal profile of a published version, verified like its model; None when the version
  has no profile (published before profiles existed).

  ``source`` is either a version folder (``<model_dir>/<detector>/<version>``: its manifest's
  signature is checked with ``public_keys``, default the reader's key file), or a
  :class:`model.registry.LoadedModel` (its manifest was verified when it was loaded) together
  with ``model_dir``. Either way the file's sha256 must match the signed manifest's
  (:func:`model.registry.read_version_file`); ModelIntegrityError when it does not, or when
  the file is not a profile.
  """
  if isinstance(source, registry.LoadedModel):
    if model_dir is None:
      raise ValueError('load_profile(LoadedModel) needs the model_dir it was loaded from')
    manifest = source.manifest
    detector, version = manifest.get('detector'), source.version
  else:
    model_dir, detector, version = (_split_version_dir(source) if isinstance(source, str)
                                    else tuple(source))
    manifest = registry.read_manifest(model_dir, detector, version, public_keys)
  data = registry.read_version_file(model_dir, detector, version, PROFILE_FILE, manifest)
  if data is None:
    return None
  if len(data) > MAX_PROFILE_BYTES:
    raise registry.ModelIntegrityError(f'refusing the profile of {detector} {version}: larger '
                                       f'than {MAX_PROFILE_BYTES} bytes')
  try:
    return NormalProfile.from_json(json.loads(data))
  except ValueError as e:
    raise registry.ModelIntegrityError(
        f'refusing the profile of {detector} {version}: {e}') from None

