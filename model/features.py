"""Feature preprocessing that travels inside every model, so training and serving agree.

A detector's model takes a pandas DataFrame with the raw columns of its schema (as parsed by
:mod:`transforms.cleaning`) and does all feature work itself: missing values, skewed counts,
categorical columns with values never seen in training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from schemas.records import RecordSchema

# scikit-learn is imported where a model is built, not at import: the stream job's submitting
# process imports this module (through the scoring transform) and never builds one, and
# scikit-learn is a third of its start.
if TYPE_CHECKING:
  from sklearn.compose import ColumnTransformer
  from sklearn.pipeline import Pipeline

MISSING_CATEGORY = '__missing__'


def signed_log1p(x):
  """Byte counts and page faults span ten orders of magnitude; the log keeps them comparable."""
  x = np.asarray(x, dtype=float)
  return np.sign(x) * np.log1p(np.abs(x))


def as_categories(frame):
  """Strings as plain objects with an explicit 'missing' category (pandas 3 str dtypes and
  None/NaN mixtures otherwise trip the encoder)."""
  frame = pd.DataFrame(frame).astype(object)
  return frame.where(frame.notna(), MISSING_CATEGORY)


def preprocessor(schema: RecordSchema, max_categories: int = 40) -> ColumnTransformer:
  """Raw schema columns -> a dense numeric matrix."""
  # pylint: disable=import-outside-toplevel,redefined-outer-name
  from sklearn.compose import ColumnTransformer
  from sklearn.impute import SimpleImputer
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import FunctionTransformer, OneHotEncoder
  numeric = make_pipeline(
      SimpleImputer(strategy='median', keep_empty_features=True),
      FunctionTransformer(signed_log1p, feature_names_out='one-to-one'))
  categorical = make_pipeline(
      FunctionTransformer(as_categories, feature_names_out='one-to-one'),
      OneHotEncoder(handle_unknown='infrequent_if_exist', max_categories=max_categories,
                    sparse_output=False))
  return ColumnTransformer([
      ('numeric', numeric, list(schema.numeric_features)),
      ('categorical', categorical, list(schema.categorical_features)),
  ])


def feature_arrays(schema: RecordSchema, columns: Mapping[str, Sequence[Any]]
                   ) -> dict[str, np.ndarray]:
  """The schema's feature columns of cleaned columns (as a RecordBatch holds them) as numpy
  arrays: numbers as float64 (None becomes NaN), strings as objects."""
  numeric = set(schema.numeric_features)
  return {name: (np.array(columns[name], dtype='float64') if name in numeric
                 else _object_array(columns[name]))
          for name in schema.feature_columns}


def _object_array(values: Sequence[Any]) -> np.ndarray:
  # Filled element by element: np.array(values, dtype=object) would nest sequences.
  out = np.empty(len(values), dtype=object)
  out[:] = list(values)
  return out


def frame_from_columns(schema: RecordSchema, columns: Mapping[str, Sequence[Any]]
                       ) -> pd.DataFrame:
  """The model input for cleaned columns (as a RecordBatch holds them): exactly the schema's
  feature columns, numbers as float64 (None becomes NaN), strings as objects."""
  # Explicit object Series: pandas 3 would otherwise store strings as Arrow strings, which the
  # encoder converts straight back, at a tenth of the model's cost.
  return pd.DataFrame({
      name: values if values.dtype != object else pd.Series(values, dtype=object)
      for name, values in feature_arrays(schema, columns).items()})


def frame_from_records(schema: RecordSchema, records: Iterable[dict[str, Any]]) -> pd.DataFrame:
  """The model input for cleaned record dicts (training, tests): see frame_from_columns."""
  records = list(records)
  return frame_from_columns(
      schema, {name: [r.get(name) for r in records] for name in schema.feature_columns})


def classifier_pipeline(schema: RecordSchema, estimator) -> Pipeline:
  from sklearn.pipeline import Pipeline  # pylint: disable=import-outside-toplevel,redefined-outer-name
  return Pipeline([('features', preprocessor(schema)), ('model', estimator)])
