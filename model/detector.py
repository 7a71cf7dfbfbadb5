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

from model.features import classifier_pipeline
from schemas.records import RecordSchema


class ScoredDetector(ClassifierMixin, BaseEstimator):
  """A fitted pipeline + how to read an anomaly score from it + the alert threshold."""

  def __init__(self, pipeline=None, score_method='predict_proba', threshold=0.5):
    self.pipeline = pipeline
    self.score_method = score_method
    self.threshold = threshold

  def anomaly_score(self, X) -> np.ndarray:
    if self.score_method == 'predict_proba':
      return self.pipeline.predict_proba(X)[:, 1]
    if self.score_method == 'isolation':
      # score_samples is minus the paper's anomaly score 2^(-E[h]/c(n)), which lies in (0, 1].
      return np.clip(-self.pipeline.score_samples(X), 0.0, 1.0)
    raise ValueError(f'unknown score_method {self.score_method!r}')

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
