"""The model contract every detector keeps (DESIGN.md), and the stock detectors.

``predict_proba(X)[:, 1]`` is the anomaly score (higher is more anomalous) and ``predict(X)``
is 0/1 at the calibrated ``threshold``. :class:`ScoredDetector` gives any fitted scikit-learn
pipeline that contract, whether it scores by class probability (a classifier) or by an
anomaly score (IsolationForest).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest

from model.features import classifier_pipeline, frame_from_columns
from model.serving import score_distinct_rows
from schemas.records import RecordSchema


class ScoredDetector(ClassifierMixin, BaseEstimator):
  """A fitted pipeline + how to read an anomaly score from it + the alert threshold."""

  def __init__(self, pipeline=None, score_method='predict_proba', threshold=0.5):
    self.pipeline = pipeline
    self.score_method = score_method
    self.threshold = threshold

  def anomaly_score(self, X) -> np.ndarray:
    return self._score(self.pipeline, X)

  def _score(self, model, X) -> np.ndarray:
    if self.score_method == 'predict_proba':
      return model.predict_proba(X)[:, 1]
    if self.score_method == 'isolation':
      # score_samples is minus the paper's anomaly score 2^(-E[h]/c(n)), which lies in (0, 1].
      return np.clip(-model.score_samples(X), 0.0, 1.0)
    raise ValueError(f'unknown score_method {self.score_method!r}')

  def serve_features(self, compiled) -> None:
    """Scores :meth:`score_columns` through ``compiled`` (model/serving.py's compiled form of
    the pipeline's first step), in this process only."""
    self._compiled_features = compiled

  def score_columns(self, schema: RecordSchema, columns) -> np.ndarray:
    """``anomaly_score`` of the frame :func:`model.features.frame_from_columns` makes of
    ``columns`` (a RecordBatch's); without the frame when the preprocessing is compiled."""
    compiled = self.__dict__.get('_compiled_features')
    if compiled is not None and compiled.input_columns == tuple(schema.feature_columns):
      matrix = compiled.transform(columns)
      if matrix is not None:
        final = self.pipeline.steps[-1][1]
        return score_distinct_rows(lambda rows: self._score(final, rows), matrix)
    return self.anomaly_score(frame_from_columns(schema, columns))

  def __getstate__(self):
    # A copy: on Python 3.11+ the default state is the instance's own __dict__.
    state = dict(super().__getstate__())
    state.pop('_compiled_features', None)  # process-local; the pickle stays scikit-learn's own
    return state

  def predict_proba(self, X) -> np.ndarray:
    score = self.anomaly_score(X)
    return np.column_stack([1.0 - score, score])

  def predict(self, X) -> np.ndarray:
    return (self.anomaly_score(X) >= self.threshold).astype(np.int64)

  @property
  def classes_(self):
    return np.array([0, 1])


def threshold_for_alert_rate(scores: np.ndarray, alert_rate: float) -> float:
  """The score above which a fraction ``alert_rate`` of ``scores`` lies."""
  return float(np.quantile(np.asarray(scores, dtype=float), 1.0 - alert_rate))


def fit_supervised(schema: RecordSchema, X, y, *, threshold: float = 0.5,
                   random_state: int = 0, **params) -> ScoredDetector:
  """A classifier on labelled data; class weights balance the rare attack class."""
  params.setdefault('max_iter', 200)
  estimator = HistGradientBoostingClassifier(
      class_weight='balanced', random_state=random_state, **params)
  pipeline = classifier_pipeline(schema, estimator).fit(X, np.asarray(y, dtype=int))
  return ScoredDetector(pipeline, 'predict_proba', threshold)


def fit_isolation_forest(schema: RecordSchema, X, *, alert_rate: float = 0.01,
                         random_state: int = 0, **params) -> ScoredDetector:
  """An unsupervised detector whose threshold flags ``alert_rate`` of the training rows."""
  params.setdefault('n_estimators', 100)
  pipeline = classifier_pipeline(
      schema, IsolationForest(random_state=random_state, **params)).fit(X)
  detector = ScoredDetector(pipeline, 'isolation')
  detector.threshold = threshold_for_alert_rate(detector.anomaly_score(X), alert_rate)
  return detector
