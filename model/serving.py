"""What a worker does to a verified model before serving it: compile what it can.

* The network detector's forest (100 trees about 100 deep) is most of a record's scoring cost
  when scikit-learn walks it tree by tree. ONNX Runtime scores the same trees in one C++ call,
  in less time a record and a fraction of the fixed cost per call (benchmarks/README.md,
  'Figures behind the code's defaults'). Its scores equal scikit-learn's up to float32 sums
  against float64; tests/test_serving.py holds them to 1e-5.
* Every detector's preprocessing (model/features.py: median imputation and a signed log of the
  numbers, one-hot categories) runs as scikit-learn's ColumnTransformer on a pandas DataFrame,
  whose fixed cost per call (validation, DataFrame and Series construction, dispatch through
  each step) was a larger share of scoring than the model itself for the Gaussian mixture.
  :class:`CompiledFeatures` reads the fitted transformer's values once (medians, categories
  and where each lands in the matrix) and then builds the same matrix from a batch's columns
  with a few numpy operations: bit for bit the transformer's output, checked against it when
  compiled (a mismatch leaves the model to scikit-learn) and by tests/test_serving.py on real
  records. A batch holding a value it was not built for (not a string in a categorical column,
  an infinite number) goes through the transformer itself, which then behaves as it always
  did.

The compiled features live in the worker's memory only, built from the model that
:func:`model.registry.load` has just verified (signed manifest, checksum, trusted types). The
forest's ONNX graph is made once, when the model is published (:func:`serving_files`), and
stored in the version folder beside it, where the signed manifest covers it as it covers the
model: converting the trees was most of a worker's model load, at every start and every
reload (benchmarks/README.md, "Startup: one JVM fewer, ..."). A reader maps the verified graph and checks it against the forest on a probe batch
(:class:`OnnxForest`); a version published without one, or whose graph does not load or
agree, is converted in the worker as before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
  from sklearn.compose import ColumnTransformer
  from sklearn.preprocessing import OneHotEncoder

from model.features import MISSING_CATEGORY, as_categories, signed_log1p

log = logging.getLogger(__name__)

# The ONNX opset of the compiled graph; ai.onnx.ml's TreeEnsemble ops come with it.
ONNX_OPSET = 18
# The forest's ONNX graph in a version folder (model/registry.py publishes and reads it).
FOREST_GRAPH_FILE = 'forest.onnx'
# The files a version may hold for serving (each covered by its signed manifest).
SERVING_FILES = (FOREST_GRAPH_FILE,)
# How far the graph's float32 sums may drift from scikit-learn's float64 ones.
GRAPH_TOLERANCE = 1e-5


def onnx_graph(forest, n_features: int) -> bytes:
  """A fitted scikit-learn ``RandomForestClassifier`` as a serialised ONNX graph."""
  from skl2onnx import to_onnx  # pylint: disable=import-outside-toplevel  # slow to import
  graph = to_onnx(forest, np.zeros((1, n_features), dtype=np.float32),
                  options={id(forest): {'zipmap': False}}, target_opset=ONNX_OPSET)
  return graph.SerializeToString()


class OnnxForest:
  """A fitted scikit-learn ``RandomForestClassifier`` as an ONNX Runtime session: of
  ``graph`` (its :func:`onnx_graph`, published with it) when given, else converted here.
  NotCompilable when a given graph scores a probe batch differently from ``forest``."""

  def __init__(self, forest, n_features: int, graph: Optional[bytes] = None):
    import onnxruntime  # pylint: disable=import-outside-toplevel  # starts a thread at import
    given = graph is not None
    options = onnxruntime.SessionOptions()
    # The runner already runs a worker per core (see transforms/inference.py).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    self._session = onnxruntime.InferenceSession(
        graph if given else onnx_graph(forest, n_features), options,
        providers=['CPUExecutionProvider'])
    self._input = self._session.get_inputs()[0].name
    self._output = [o.name for o in self._session.get_outputs() if o.name != 'label'][0]
    if given:
      self._check(forest, n_features)

  def _check(self, forest, n_features: int) -> None:
    probe = np.random.default_rng(0).normal(0.0, 3.0, (16, n_features)).astype(np.float32)
    expected = forest.predict_proba(probe)
    got = self.predict_proba(probe)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0,
                                                      atol=GRAPH_TOLERANCE):
      raise NotCompilable('the published ONNX graph scores differently from its forest')

  def predict_proba(self, X: np.ndarray) -> np.ndarray:
    return self._session.run([self._output], {self._input: X})[0]


class NotCompilable(ValueError):
  """The fitted transformer is not the shape :class:`CompiledFeatures` reproduces."""


# A category no training set holds: the probe of what an unseen value becomes.
_UNSEEN = '\x00unseen category\x00'
_NONE_TYPE = type(None)


def _steps(pipeline: Any, *types: type) -> list:
  steps = [step for _, step in getattr(pipeline, 'steps', ())]
  if len(steps) != len(types) or not all(type(s) is t for s, t in zip(steps, types)):
    raise NotCompilable(f'not a pipeline of {[t.__name__ for t in types]}: {pipeline!r}')
  return steps


class _Columns(dict):
  """{category: matrix column}; any other value is the ``unseen`` column, without being
  added (hostile values must not grow it)."""
  unseen = -1

  def __missing__(self, value):
    return self.unseen


class CompiledFeatures:
  """A fitted :func:`model.features.preprocessor` as numpy operations on a batch's columns.

  ``transform(columns)`` is ``transformer.transform(frame)`` for the frame
  :func:`model.features.frame_from_columns` makes of the same columns (numbers as float64,
  None as NaN; strings as objects), without building the frame; None for a batch it was not
  built for (then the caller runs the transformer).
  """

  def __init__(self, transformer: ColumnTransformer):
    # pylint: disable=import-outside-toplevel,redefined-outer-name
    # Imported here, not at import: see model/features.py.
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder
    if type(transformer) is not ColumnTransformer:
      raise NotCompilable(f'not a ColumnTransformer: {type(transformer).__name__}')
    parts = {}
    for name, step, columns in transformer.transformers_:
      if name == 'remainder' and step == 'drop':
        continue
      parts[name] = (step, list(columns))
    if sorted(parts) != ['categorical', 'numeric']:
      raise NotCompilable(f'unexpected parts {sorted(parts)}')
    if getattr(transformer, 'sparse_output_', False):
      raise NotCompilable('sparse output')
    self.input_columns = tuple(getattr(transformer, 'feature_names_in_', ()))
    imputer, log_step = _steps(parts['numeric'][0], SimpleImputer, FunctionTransformer)
    to_categories, encoder = _steps(parts['categorical'][0], FunctionTransformer, OneHotEncoder)
    if (log_step.func is not signed_log1p or log_step.kw_args or imputer.add_indicator
        or not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values))
        or to_categories.func is not as_categories or to_categories.kw_args
        or encoder.drop is not None or encoder.sparse_output):
      raise NotCompilable('a step is configured differently from model.features.preprocessor')
    self._numeric = parts['numeric'][1]
    self._categorical = parts['categorical'][1]
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if not imputer.keep_empty_features and np.isnan(statistics).any():
      raise NotCompilable('the imputer drops columns without a median')
    self._fill = statistics
    self._lookups, self._unseen, self.width = self._category_columns(encoder)
    self._check(transformer)

  def _category_columns(self, encoder: OneHotEncoder) -> tuple[list[dict], list[int], int]:
    """For each categorical column: {value: matrix column} of its known values and None, the
    column of any other value (-1: none, an all-zero block), and the matrix width; read off
    the fitted encoder by transforming every category it knows and one it does not."""
    categories = [list(c) for c in encoder.categories_]
    if len(categories) != len(self._categorical) or not all(
        isinstance(v, str) for c in categories for v in c):
      raise NotCompilable('categories that are not all strings')
    # One block per column, in order: a column for each frequent category, and one for all
    # infrequent ones when there are any (drop=None); _check catches any other layout.
    infrequent = getattr(encoder, 'infrequent_categories_', [None] * len(categories))
    widths = [len(c) - len(rare) + 1 if rare is not None and len(rare) else len(c)
              for c, rare in zip(categories, infrequent)]
    owners = [i for i, width in enumerate(widths) for _ in range(width)]
    start = len(self._numeric)
    rows = max(map(len, categories)) + 1
    probe = pd.DataFrame({
        name: pd.Series([c[r] if r < len(c) else _UNSEEN for r in range(rows)], dtype=object)
        for name, c in zip(self._categorical, categories)})
    encoded = np.asarray(encoder.transform(as_categories(probe)))
    lookups, unseen = [], []
    for i, values in enumerate(categories):
      offset = owners.index(i)
      block = encoded[:, offset:offset + owners.count(i)]

      def column_of(row, block=block, offset=offset):
        hot = np.flatnonzero(block[row])
        return start + offset + int(hot[0]) if len(hot) else -1
      lookup = _Columns({value: column_of(r) for r, value in enumerate(values)})
      lookup.unseen = column_of(rows - 1)
      lookup[None] = lookup.get(MISSING_CATEGORY, lookup.unseen)
      unseen.append(lookup.unseen)
      lookups.append(lookup)
    return lookups, unseen, start + len(owners)

  def _check(self, transformer: ColumnTransformer) -> None:
    """Both ways on a batch of every category, an unseen one, missing values and numbers of
    every sign: they must agree bit for bit, or this is not served."""
    n = max([len(lookup) for lookup in self._lookups] + [8])
    numbers = [None, 0, -3.5, 1.0e9, 7, 0.25, -1, 123456789]
    columns: dict[str, list] = {
        name: [numbers[(r + i) % len(numbers)] for r in range(n)]
        for i, name in enumerate(self._numeric)}
    for name, lookup in zip(self._categorical, self._lookups):
      values = [v for v in lookup if v is not None] + [None, _UNSEEN]
      columns[name] = [values[r % len(values)] for r in range(n)]
    frame = pd.DataFrame({
        **{name: np.array(columns[name], dtype='float64') for name in self._numeric},
        **{name: pd.Series(columns[name], dtype=object) for name in self._categorical}},
        columns=list(self.input_columns) or None)
    expected = np.asarray(transformer.transform(frame), dtype=np.float64)
    got = self.transform(columns)
    if got is None or got.shape != expected.shape or got.tobytes() != expected.tobytes():
      raise NotCompilable('the compiled features differ from the transformer\'s')

  def transform(self, columns: Mapping[str, Sequence[Any]]) -> Optional[np.ndarray]:
    n = len(columns[self._numeric[0]]) if self._numeric else len(columns[self._categorical[0]])
    out = np.zeros((n, self.width), dtype=np.float64)
    if self._numeric:
      numbers = np.array([columns[name] for name in self._numeric], dtype=np.float64).T
      missing = np.isnan(numbers)
      if np.isinf(numbers).any():
        return None  # the imputer refuses infinities; let it say so
      if missing.any():
        numbers = np.where(missing, self._fill, numbers)
      out[:, :len(self._numeric)] = signed_log1p(numbers)
    rows = np.arange(n)
    for name, lookup, unseen in zip(self._categorical, self._lookups, self._unseen):
      values = columns[name]
      if not set(map(type, values)) <= {str, _NONE_TYPE}:
        return None
      hot = np.fromiter(map(lookup.__getitem__, values), dtype=np.intp, count=n)
      if unseen < 0:  # no column for an unseen value (no "infrequent" one): all zeros
        kept = hot >= 0
        out[rows[kept], hot[kept]] = 1.0
      else:
        out[rows, hot] = 1.0
    return out


def compile_features(transformer: Any) -> Optional[CompiledFeatures]:
  """:class:`CompiledFeatures` of a fitted preprocessor, or None (with a warning when it is
  a ColumnTransformer that does not compile)."""
  try:
    return CompiledFeatures(transformer)
  except NotCompilable as e:
    log.warning('serving the %s preprocessing with scikit-learn: %s',
                type(transformer).__name__, e)
  except Exception:  # pylint: disable=broad-except
    log.warning('could not compile the %s preprocessing; scikit-learn runs it',
                type(transformer).__name__, exc_info=True)
  return None


def score_distinct_rows(score: Callable[[np.ndarray], np.ndarray],
                        matrix: np.ndarray) -> np.ndarray:
  """``score(matrix)``, with each distinct row of ``matrix`` scored once: a detector's score is
  a function of its row alone, and real traffic repeats rows (a flood's copies, a scan's
  probes). Finding them costs a fraction of what scoring them does (benchmarks/README.md,
  "Each distinct row scored once")."""
  matrix = np.ascontiguousarray(matrix)
  index: dict[bytes, int] = {}
  inverse = np.fromiter((index.setdefault(row, len(index)) for row in map(bytes, matrix)),
                        dtype=np.intp, count=len(matrix))
  if len(index) == len(matrix):
    return score(matrix)
  # A position of each distinct row (any one: its copies are alike).
  where = np.empty(len(index), dtype=np.intp)
  where[inverse] = np.arange(len(matrix))
  return score(matrix[where])[inverse]


def _final_step(estimator: Any) -> tuple[Any, Optional[list]]:
  pipeline = getattr(estimator, 'pipeline', estimator)
  steps = getattr(pipeline, 'steps', None)
  return (steps[-1][1] if steps else pipeline), steps


def serving_files(estimator: Any) -> dict[str, bytes]:
  """What is published beside a model so that readers need not compile it: the forest's ONNX
  graph ({:data:`FOREST_GRAPH_FILE`: bytes}), or nothing for a detector without one (or one
  that does not convert: its readers then leave it to scikit-learn, with a warning)."""
  final, _ = _final_step(estimator)
  graph = getattr(final, 'onnx_graph', None)
  if graph is None:
    return {}
  try:
    return {FOREST_GRAPH_FILE: graph()}
  except Exception:  # pylint: disable=broad-except
    log.warning('could not convert the %s forest to ONNX; published without its graph',
                type(final).__name__, exc_info=True)
    return {}


def compile_for_serving(estimator: Any, files: Optional[Mapping[str, bytes]] = None) -> Any:
  """Compiles the forest and the preprocessing of a loaded detector in place, where it has
  them; returns it. ``files``: the verified :func:`serving_files` of its version.

  What does not compile is served by scikit-learn, with a warning: slower, never wrong.
  """
  final, steps = _final_step(estimator)
  compile_step = getattr(final, 'compile_for_serving', None)
  if compile_step is not None:
    graph = (files or {}).get(FOREST_GRAPH_FILE)
    try:
      compile_step(graph)
    except Exception as e:  # pylint: disable=broad-except
      if graph is not None:
        log.warning('not serving the published ONNX graph of the %s forest (%s); converting '
                    'the forest here', type(final).__name__, e)
        return compile_for_serving(estimator)
      log.warning('could not compile the %s forest; scikit-learn scores it',
                  type(final).__name__, exc_info=True)
  serve_features = getattr(estimator, 'serve_features', None)
  if serve_features is not None and steps and len(steps) == 2 and not hasattr(
      final, 'feature_names_in_'):
    # A final step fitted on named columns would warn about a plain matrix: not compiled.
    compiled = compile_features(steps[0][1])
    if compiled is not None:
      serve_features(compiled)
  return estimator
