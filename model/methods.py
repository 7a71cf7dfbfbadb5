"""Training methods of the retrain job and their hyperparameter grids.

Every method returns a :class:`~model.detector.ScoredDetector` (the model contract: the
pipeline takes the raw feature columns by name, ``predict_proba(X)[:, 1]`` is the anomaly
score, ``predict`` is 0/1 at ``threshold``), so the stream serves any of them unchanged.

Network detector, no labels needed to train (labels, when present, only choose the reference
rows, the method and its hyperparameters, and measure the result):

* ``rf_synthetic`` -- the original design: a RandomForest separates the real records from
  synthetic ones made by resampling each column independently (the product of the marginals,
  Shi & Horvath 2006). Where real records are denser than "the columns are unrelated"
  predicts, the forest says real; elsewhere synthetic, and P(synthetic | x) is the anomaly
  score. Two additions make it score what it never saw: a share of the synthetic values is
  uniform over a range widened beyond the observed one (numbers, after the log scaling) or a
  category never seen, so records outside the training support are scored as anomalous
  instead of inheriting the score of the nearest edge leaf.
* ``isolation_forest`` -- IsolationForest (Liu et al. 2008) on the same features.
* ``gaussian_mixture`` -- a Gaussian mixture (diagonal covariances) on the scaled features of
  the *distinct* records, and minus its log-likelihood as the anomaly score. Each record first
  falls into a coarse cell (every log-scaled number rounded to :data:`CELL_WIDTH`); the mixture
  learns one record per cell, so a flood of near-identical records (smurf, neptune: thousands
  of copies of a few cells) weighs as much as a handful of normal connections instead of
  becoming "normal traffic". No label is needed for that: it is the records' own rarity.

What they learn as normal traffic matters more than which one it is (see
:func:`auto_methods` and ``--reference``): the records labelled normal when the archive has
labels (KDD Cup data is ~80% smurf / neptune floods, so density learned from all records calls
the floods normal), all records otherwise. With labels, cross-validation on the held-out
labels picks the method and its grid point; without, label-free criteria do: the area under
the mass-volume curve (model/criteria.py) picks each method's grid point, and the contrast AUC
on the calibration split picks between the Gaussian mixture and IsolationForest
(model/selection.py; the real-vs-synthetic forest learns floods, frequent patterns, as normal).

Supervised (labels needed; the process and memory detectors, or ``--method`` for network):

* ``hgb`` -- HistGradientBoosting with balanced class weights (the rare attack class counts
  as much as the normal one) and early stopping.
* ``random_forest`` -- a RandomForest with ``balanced_subsample`` class weights.

All of them sit behind :func:`model.features.preprocessor`: median imputation and a signed
log of every number (byte counts and page faults span ten orders of magnitude), one-hot
categories with rare and unseen values folded into an "infrequent" column.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import (HistGradientBoostingClassifier, IsolationForest,
                              RandomForestClassifier)
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline

from model import serving
from model.detector import ScoredDetector
from model.features import preprocessor
from schemas.records import SCHEMAS, RecordSchema

UNSUPERVISED = ('gaussian_mixture', 'rf_synthetic', 'isolation_forest')
SUPERVISED = ('hgb', 'random_forest')
METHODS = UNSUPERVISED + SUPERVISED

# Defaults: what a method trains with when no grid point overrides it.
DEFAULTS: dict[str, dict[str, Any]] = {
    'rf_synthetic': {'n_estimators': 100, 'min_samples_leaf': 2, 'max_features': 'sqrt',
                     'max_samples': 50_000, 'uniform_share': 0.1, 'widen': 0.5,
                     'synthetic_ratio': 1.0},
    'isolation_forest': {'n_estimators': 200, 'max_samples': 1024, 'max_features': 1.0},
    'gaussian_mixture': {'n_components': 8, 'reg_covar': 0.1, 'cell_width': 0.5,
                         'max_cells': 50_000},
    'hgb': {'learning_rate': 0.1, 'max_leaf_nodes': 31, 'l2_regularization': 0.0,
            'max_iter': 300},
    'random_forest': {'n_estimators': 150, 'min_samples_leaf': 2, 'max_features': 'sqrt',
                      'max_samples': 100_000},
}

# Hyperparameter grids searched by cross-validation when the data carries labels.
GRIDS: dict[str, dict[str, dict[str, list]]] = {
    'default': {
        'rf_synthetic': {'uniform_share': [0.1, 0.25], 'min_samples_leaf': [2, 10]},
        'isolation_forest': {'max_samples': [256, 1024, 4096], 'max_features': [1.0, 0.5]},
        'gaussian_mixture': {'n_components': [4, 8, 16]},
        'hgb': {'max_leaf_nodes': [15, 63], 'l2_regularization': [0.0, 1.0]},
        'random_forest': {'min_samples_leaf': [1, 5]},
    },
    'small': {
        'rf_synthetic': {'min_samples_leaf': [2]},
        'isolation_forest': {'max_samples': [256, 1024]},
        'gaussian_mixture': {'n_components': [4, 8]},
        'hgb': {'max_leaf_nodes': [15, 31]},
        'random_forest': {'min_samples_leaf': [2]},
    },
}


# Without labels nothing measures a grid point: the defaults then follow the IsolationForest
# paper (subsamples of 256 keep a cluster of attack records from masking itself).
UNLABELLED_DEFAULTS: dict[str, dict[str, Any]] = {'isolation_forest': {'max_samples': 256}}


# What ``--method auto`` fits without labels: the mixture (its grid point chosen by the
# mass-volume criterion, model/criteria.py) and IsolationForest (the paper's defaults); the
# contrast AUC chooses between them (model/selection.py).
LABEL_FREE = ('gaussian_mixture', 'isolation_forest')
LABEL_FREE_BASELINE = 'isolation_forest'


def auto_methods(detector: str, has_labels: bool) -> tuple[str, ...]:
  """What ``--method auto`` tries. Network: all label-free methods when held-out labels can
  choose between them; without labels, :data:`LABEL_FREE`, chosen by label-free criteria
  (model/selection.py). The real-vs-synthetic forest is left out then: it learns every frequent pattern
  as normal, and a flood (thousands of near-identical attack records: neptune, smurf) is a
  frequent pattern, so on an unlabelled archive it scores floods as normal (benchmarks/
  README.md, 'Figures behind the code's defaults'); learning from records labelled normal,
  all work. Detectors whose schema is supervised by default (the host streams): the
  supervised classifiers."""
  if SCHEMAS[detector].supervised_by_default:
    return SUPERVISED
  return UNSUPERVISED if has_labels else LABEL_FREE


def default_params(method: str, has_labels: bool = True) -> dict[str, Any]:
  params = dict(DEFAULTS[method])
  if not has_labels:
    params.update(UNLABELLED_DEFAULTS.get(method, {}))
  return params


def grid_points(method: str, grid: str | dict, overrides: Optional[dict] = None
                ) -> list[dict[str, Any]]:
  """The parameter dicts of one method's grid (each complete: defaults + the point)."""
  if isinstance(grid, str):
    axes = {} if grid == 'none' else dict(GRIDS[grid].get(method, {}))
  else:
    axes = dict(grid.get(method, {}))
  if overrides:
    axes.update({k: v if isinstance(v, list) else [v] for k, v in overrides.items()})
  names = sorted(axes)
  points = []
  for values in itertools.product(*(axes[n] for n in names)):
    params = dict(DEFAULTS[method])
    params.update(zip(names, values))
    points.append(params)
  return points or [dict(DEFAULTS[method])]


# ---- the real-vs-synthetic forest -------------------------------------------------------------

class SyntheticContrastForest(ClassifierMixin, BaseEstimator):
  """A RandomForest trained to tell real rows (class 0) from synthetic rows (class 1) drawn
  from the product of the real columns' marginals, widened by a uniform share.

  It works on the preprocessed matrix and moves each raw column's block of matrix columns as
  one (a one-hot block stays a valid one-hot row). The blocks are ``blocks`` when given, else
  found at fit from the matrix's column names (``numeric__src_bytes``,
  ``categorical__service_http``) and ``feature_columns``: fitted as the last step of a
  Pipeline whose preprocessor outputs a DataFrame (:func:`fit`), so the Pipeline can be cloned
  and refitted. Fit on real rows only (``y`` is ignored); ``predict_proba(X)[:, 1]`` is
  P(synthetic | x), the anomaly score.
  """

  def __init__(self, n_estimators=100, min_samples_leaf=2, max_features='sqrt',
               max_samples=50_000, uniform_share=0.1, widen=0.5, synthetic_ratio=1.0,
               blocks=None, feature_columns=None, n_jobs=None, random_state=0):
    self.n_estimators = n_estimators
    self.min_samples_leaf = min_samples_leaf
    self.max_features = max_features
    self.max_samples = max_samples
    self.uniform_share = uniform_share
    self.widen = widen
    self.synthetic_ratio = synthetic_ratio
    self.blocks = blocks
    self.feature_columns = feature_columns
    self.n_jobs = n_jobs
    self.random_state = random_state

  def synthesize(self, X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    blocks = self.__dict__.get('blocks_') or self.blocks or [[i] for i in range(X.shape[1])]
    out = np.empty((n, X.shape[1]), dtype=float)
    for block in blocks:
      block = list(block)
      out[:, block] = X[rng.integers(0, len(X), n)][:, block]
      widened = rng.random(n) < self.uniform_share
      if not widened.any():
        continue
      if len(block) == 1:  # a number: uniform over the widened observed range
        lo, hi = float(X[:, block[0]].min()), float(X[:, block[0]].max())
        margin = self.widen * max(hi - lo, 1.0)
        out[widened, block[0]] = rng.uniform(lo - margin, hi + margin, int(widened.sum()))
      else:  # a category: any of the block's values, or one never seen (all zeros)
        choice = rng.integers(0, len(block) + 1, int(widened.sum()))
        values = np.zeros((len(choice), len(block)))
        seen = choice < len(block)
        values[np.flatnonzero(seen), choice[seen]] = 1.0
        out[np.ix_(np.flatnonzero(widened), block)] = values
    return out

  def fit(self, X, y=None):
    self.blocks_ = self.blocks
    if self.blocks_ is None and self.feature_columns and hasattr(X, 'columns'):
      self.blocks_ = list(blocks_of(X.columns, self.feature_columns).values())
    X = np.asarray(X, dtype=float)
    rng = np.random.default_rng(self.random_state)
    n_synthetic = max(1, int(round(len(X) * self.synthetic_ratio)))
    synthetic = self.synthesize(X, n_synthetic, rng)
    data = np.vstack([X, synthetic])
    target = np.r_[np.zeros(len(X), dtype=int), np.ones(n_synthetic, dtype=int)]
    max_samples = None
    if self.max_samples and self.max_samples < len(data):
      max_samples = int(self.max_samples)
    self.forest_ = RandomForestClassifier(
        n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
        max_features=self.max_features, max_samples=max_samples,
        class_weight='balanced' if self.synthetic_ratio != 1.0 else None,
        n_jobs=self.n_jobs, random_state=self.random_state).fit(data, target)
    self.classes_ = np.array([0, 1])
    self.n_features_in_ = X.shape[1]
    return self

  def onnx_graph(self) -> bytes:
    """The forest as an ONNX graph, published beside the model (see model/serving.py)."""
    return serving.onnx_graph(self.forest_, self.n_features_in_)

  def compile_for_serving(self, graph: Optional[bytes] = None) -> None:
    """Scores with ONNX Runtime from now on, in this process: with ``graph`` (the published
    one), else converted here (see model/serving.py)."""
    self._compiled = serving.OnnxForest(self.forest_, self.n_features_in_, graph)

  def __getstate__(self):
    # A copy: on Python 3.11+ the default state is the instance's own __dict__.
    state = dict(super().__getstate__())
    state.pop('_compiled', None)  # process-local; the pickle stays scikit-learn's own
    return state

  def predict_proba(self, X):
    X = np.ascontiguousarray(X, dtype=np.float32)
    compiled = self.__dict__.get('_compiled')
    if compiled is not None:
      return compiled.predict_proba(X)
    # The forest's own predict_proba, without its joblib dispatch and lock per tree: the same
    # sums in the same order (identical results), less time per batch when serving
    # (benchmarks/README.md, 'Figures behind the code's defaults').
    trees = self.forest_.estimators_
    total = trees[0].predict_proba(X, check_input=False)
    for tree in trees[1:]:
      total += tree.predict_proba(X, check_input=False)
    return total / len(trees)

  def predict(self, X):
    return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)

  @property
  def feature_importances_(self):
    return self.forest_.feature_importances_


# ---- the Gaussian mixture on distinct records -----------------------------------------------

# Cell width on the log scale of the features: records closer than this in every feature are
# one pattern (a flood's copies, a scan's probes), learned once.
CELL_WIDTH = 0.5
# The least scale of a feature (its spread among the distinct records): a feature constant in
# training keeps a finite, large weight for the values it never took.
SCALE_FLOOR = 0.05


def distinct_cells(X: np.ndarray, cell_width: float) -> np.ndarray:
  """Indices of one row per coarse cell of ``X`` (each value rounded to ``cell_width``), in
  row order: a flood of near-identical rows keeps one."""
  X = np.asarray(X, dtype=float)
  if len(X) == 0:
    return np.zeros(0, dtype=np.int64)
  cells = np.round(X / cell_width) if cell_width > 0 else X
  _, first = np.unique(cells, axis=0, return_index=True)
  return np.sort(first)


class DensityMixture(ClassifierMixin, BaseEstimator):
  """A diagonal Gaussian mixture of the distinct cells of its training rows; the anomaly score
  is a monotone map of minus the log-likelihood into [0, 1).

  ``predict_proba(X)[:, 1]`` is ``0.5 + atan((nll - center) / spread) / pi``: ``center`` and
  ``spread`` are the median and the interquartile range of the training cells' nll, so half
  the training cells score below 0.5, and the map is strictly increasing (a record twice as
  far out always scores higher: no two distinct likelihoods tie at 1.0, unlike a logistic).
  """

  def __init__(self, n_components=8, reg_covar=0.1, cell_width=CELL_WIDTH, max_cells=50_000,
               scale_floor=SCALE_FLOOR, max_iter=200, random_state=0):
    self.n_components = n_components
    self.reg_covar = reg_covar
    self.cell_width = cell_width
    self.max_cells = max_cells
    self.scale_floor = scale_floor
    self.max_iter = max_iter
    self.random_state = random_state

  def fit(self, X, y=None):
    X = np.asarray(X, dtype=float)
    cells = distinct_cells(X, self.cell_width)
    if self.max_cells and len(cells) > self.max_cells:
      rng = np.random.default_rng(self.random_state)
      cells = np.sort(rng.choice(cells, int(self.max_cells), replace=False))
    reference = X[cells]
    self.scale_ = reference.std(axis=0) + self.scale_floor
    scaled = reference / self.scale_
    components = int(max(1, min(self.n_components, len(cells))))
    self.mixture_ = GaussianMixture(
        components, covariance_type='diag', reg_covar=self.reg_covar, max_iter=self.max_iter,
        random_state=self.random_state).fit(scaled)
    nll = -self.mixture_.score_samples(scaled)
    low, self.center_, high = np.percentile(nll, [25, 50, 75])
    self.spread_ = float(max(high - low, 1e-6))
    self.center_ = float(self.center_)
    self.cells_ = int(len(cells))
    self.classes_ = np.array([0, 1])
    self.n_features_in_ = X.shape[1]
    return self

  def negative_log_likelihood(self, X) -> np.ndarray:
    return -self.mixture_.score_samples(np.asarray(X, dtype=float) / self.scale_)

  def predict_proba(self, X):
    score = 0.5 + np.arctan((self.negative_log_likelihood(X) - self.center_) / self.spread_) / np.pi
    return np.column_stack([1.0 - score, score])

  def predict(self, X):
    return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def column_blocks(features, feature_columns) -> dict[str, list[int]]:
  """Matrix columns of each raw column, from a fitted preprocessor's output names
  (``numeric__src_bytes``, ``categorical__service_http``)."""
  return blocks_of(features.get_feature_names_out(), feature_columns)


def blocks_of(matrix_columns, feature_columns) -> dict[str, list[int]]:
  """Matrix columns of each raw column, from the preprocessor's output names."""
  names = [n.split('__', 1)[-1] for n in matrix_columns]
  by_length = sorted(feature_columns, key=len, reverse=True)
  blocks: dict[str, list[int]] = {c: [] for c in feature_columns}
  for i, name in enumerate(names):
    owner = name if name in blocks else next(
        (c for c in by_length if name.startswith(c + '_')), None)
    if owner is None:
      raise ValueError(f'cannot tell which column the feature {name!r} comes from')
    blocks[owner].append(i)
  return {c: b for c, b in blocks.items() if b}


# ---- fitting --------------------------------------------------------------------------------

def _serving(pipeline: Pipeline) -> Pipeline:
  """Fitted with all cores; served one small batch at a time, where thread pools only cost."""
  model = pipeline.named_steps['model']
  for estimator in (model, getattr(model, 'forest_', None)):
    if estimator is not None and hasattr(estimator, 'n_jobs'):
      estimator.n_jobs = None
  return pipeline


def fit(schema: RecordSchema, method: str, params: dict[str, Any], X, y=None, *,
        n_jobs: Optional[int] = -1, random_state: int = 0) -> ScoredDetector:
  """Fits one method on ``X`` (raw feature columns). Unsupervised methods learn ``X`` as the
  reference of normal traffic (the caller picks the reference rows); supervised ones need
  ``y``. The threshold is left at 0.5: :func:`model.evaluation.calibrate` sets it."""
  params = {**DEFAULTS[method], **params}
  features = preprocessor(schema)
  if method == 'rf_synthetic':
    # The forest finds each raw column's block in the matrix's column names.
    model = SyntheticContrastForest(feature_columns=tuple(schema.feature_columns),
                                    n_jobs=n_jobs, random_state=random_state, **params)
    pipeline = Pipeline([('features', features.set_output(transform='pandas')),
                         ('model', model)]).fit(X)
    return ScoredDetector(_serving(pipeline), 'predict_proba', 0.5)
  if method == 'gaussian_mixture':
    model = DensityMixture(random_state=random_state, **params)
    pipeline = Pipeline([('features', features), ('model', model)]).fit(X)
    return ScoredDetector(pipeline, 'predict_proba', 0.5)
  if method == 'isolation_forest':
    params = dict(params)
    max_samples = min(int(params.pop('max_samples')), len(X))
    model = IsolationForest(max_samples=max_samples, n_jobs=n_jobs, random_state=random_state,
                            **params)
    pipeline = Pipeline([('features', features), ('model', model)]).fit(X)
    return ScoredDetector(_serving(pipeline), 'isolation', 0.5)
  if y is None:
    raise ValueError(f'method {method!r} is supervised: it needs labels')
  y = np.asarray(y, dtype=int)
  if method == 'hgb':
    model = HistGradientBoostingClassifier(
        class_weight='balanced', early_stopping=len(X) >= 2_000, random_state=random_state,
        **params)
  elif method == 'random_forest':
    params = dict(params)
    max_samples = params.pop('max_samples')
    model = RandomForestClassifier(
        class_weight='balanced_subsample', n_jobs=n_jobs, random_state=random_state,
        max_samples=int(max_samples) if max_samples and max_samples < len(X) else None,
        **params)
  else:
    raise ValueError(f'unknown method {method!r}; expected one of {METHODS}')
  pipeline = Pipeline([('features', features), ('model', model)]).fit(X, y)
  return ScoredDetector(_serving(pipeline), 'predict_proba', 0.5)


def native_importances(detector: ScoredDetector, schema: RecordSchema) -> dict[str, float]:
  """The model's own feature importances summed per raw column (empty if it has none)."""
  pipeline = detector.pipeline
  model = pipeline.named_steps['model']
  values = getattr(model, 'feature_importances_', None)
  if values is None:
    return {}
  blocks = column_blocks(pipeline.named_steps['features'], schema.feature_columns)
  values = np.asarray(values, dtype=float)
  return {column: float(values[block].sum()) for column, block in blocks.items()}


def describe(method: str) -> str:
  return {
      'rf_synthetic': 'RandomForest real-vs-synthetic (product of marginals, widened)',
      'isolation_forest': 'IsolationForest',
      'gaussian_mixture': 'Gaussian mixture of the distinct records (floods learned once)',
      'hgb': 'HistGradientBoosting, balanced class weights',
      'random_forest': 'RandomForest, balanced class weights',
  }[method]
