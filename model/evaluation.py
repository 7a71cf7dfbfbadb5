"""How good a detector is: held-out metrics, the alert threshold, and the champion/challenger
gate.

With labels, a model is measured on the held-out test split by ROC-AUC, PR-AUC (average
precision), and precision / recall / F1 / alert rate at its alert threshold, plus the
detection rate of each labelled attack family. Without labels there is nothing to be right
about, so the measure is a proxy: how well the score separates held-out real records from
structure-less synthetic ones with the same marginals (``contrast_auc``; 0.5 means the score
knows nothing about the traffic).

The alert threshold is calibrated on the calibration split, never on the rows a model was fit
on (a forest scores its own training rows too kindly):

* ``alert_rate``: the score above which ``alert_rate`` of the reference rows lie -- the rows
  labelled normal when there are labels (so the rate is the false-alarm rate on normal
  traffic, whatever the share of attacks in the archive), all rows otherwise (the classic
  contamination setting);
* ``f1``: the threshold of the best F1 (supervised detectors, whose scores are probabilities
  of the labelled classes).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd
from sklearn.metrics import (average_precision_score, confusion_matrix, precision_recall_curve,
                             roc_auc_score, roc_curve)

from model.detector import threshold_for_alert_rate
from schemas.records import SCHEMAS, RecordSchema

# What chooses and gates a detector's model: PR-AUC where attacks are a rare labelled class
# (supervised detectors), ROC-AUC otherwise.
PRIMARY = {s.stream: 'pr_auc' if s.supervised_by_default else 'roc_auc' for s in SCHEMAS.values()}
UNLABELLED_METRIC = 'contrast_auc'
MIN_CLASS_ROWS = 5  # fewer positives or negatives than this: no AUC is computed


def has_both_classes(y: np.ndarray) -> bool:
  y = np.asarray(y)
  return int((y == 1).sum()) >= MIN_CLASS_ROWS and int((y == 0).sum()) >= MIN_CLASS_ROWS


def _finite(value: float) -> Optional[float]:
  return None if value is None or not math.isfinite(value) else float(value)


def ranking_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, Optional[float]]:
  y = np.asarray(y, dtype=int)
  if not has_both_classes(y):
    return {'roc_auc': None, 'pr_auc': None}
  return {'roc_auc': _finite(roc_auc_score(y, scores)),
          'pr_auc': _finite(average_precision_score(y, scores))}


def threshold_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
  y = np.asarray(y, dtype=int)
  flagged = np.asarray(scores) >= threshold
  tp = int((flagged & (y == 1)).sum())
  fp = int((flagged & (y == 0)).sum())
  fn = int((~flagged & (y == 1)).sum())
  tn = int((~flagged & (y == 0)).sum())
  precision = tp / (tp + fp) if tp + fp else None
  recall = tp / (tp + fn) if tp + fn else None
  f1 = (2 * precision * recall / (precision + recall)
        if precision and recall else (0.0 if precision is not None and recall is not None
                                      else None))
  return {'threshold': float(threshold), 'precision': precision, 'recall': recall, 'f1': f1,
          'alert_rate': float(flagged.mean()) if len(flagged) else None,
          'false_positive_rate': fp / (fp + tn) if fp + tn else None,
          'confusion_matrix': [[tn, fp], [fn, tp]]}


def per_label_detection(labels: np.ndarray, scores: np.ndarray, threshold: float,
                        top: int = 25) -> dict[str, dict[str, float]]:
  """For each label (attack family, or 'normal'): rows and the share flagged."""
  frame = pd.DataFrame({'label': pd.Series(labels, dtype=object).fillna('(unlabelled)'),
                        'flagged': np.asarray(scores) >= threshold})
  grouped = frame.groupby('label')['flagged'].agg(['size', 'mean'])
  grouped = grouped.sort_values('size', ascending=False).head(top)
  return {str(k): {'rows': int(r['size']), 'flagged': float(r['mean'])}
          for k, r in grouped.iterrows()}


def evaluate(y: np.ndarray, scores: np.ndarray, threshold: float,
             labels: Optional[np.ndarray] = None,
             contrast_scores: Optional[np.ndarray] = None) -> dict[str, Any]:
  """All held-out metrics of one model. ``y`` may hold -1 (unknown): those rows count for the
  alert rate only. ``contrast_scores`` are the model's scores of the synthetic contrast set."""
  y = np.asarray(y, dtype=int)
  scores = np.asarray(scores, dtype=float)
  known = y >= 0
  metrics: dict[str, Any] = {'rows': int(len(y)), 'labelled_rows': int(known.sum()),
                             'attack_rows': int((y == 1).sum())}
  metrics.update(ranking_metrics(y[known], scores[known]))
  metrics.update(threshold_metrics(y[known], scores[known], threshold))
  metrics['alert_rate'] = float((scores >= threshold).mean()) if len(scores) else None
  if labels is not None and known.any():
    metrics['per_label'] = per_label_detection(np.asarray(labels, dtype=object)[known],
                                               scores[known], threshold)
  if contrast_scores is not None:
    metrics[UNLABELLED_METRIC] = contrast_auc(scores, contrast_scores)
  return metrics


# ---- the alert threshold ---------------------------------------------------------------------

def calibrate(scores: np.ndarray, y: np.ndarray, policy: str, alert_rate: float,
              reference: np.ndarray) -> tuple[float, str]:
  """The alert threshold and how it was chosen. ``reference`` marks the rows an
  ``alert_rate`` is measured on (normal traffic)."""
  scores = np.asarray(scores, dtype=float)
  y = np.asarray(y, dtype=int)
  if policy == 'f1' and has_both_classes(y[y >= 0]):
    known = y >= 0
    precision, recall, thresholds = precision_recall_curve(y[known], scores[known])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.nanargmax(f1[:-1])) if len(thresholds) else 0
    if len(thresholds):
      return float(thresholds[best]), (
          f'best F1 ({f1[best]:.3f}) on the calibration split')
  reference_scores = scores[np.asarray(reference, dtype=bool)]
  if len(reference_scores) == 0:
    reference_scores = scores
  threshold = threshold_for_alert_rate(reference_scores, alert_rate)
  # Ties at the quantile (many identical records) would flag more than asked: step above them.
  if (reference_scores >= threshold).mean() > 2 * alert_rate + 1e-9:
    threshold = float(np.nextafter(threshold, np.inf))
  rule = f'{alert_rate:.2%} of {len(reference_scores)} calibration reference rows score above it'
  if len(reference_scores) * alert_rate < 10:
    rule += ' (few rows for that rate: the realised alert rate will be noisy)'
  return float(threshold), rule


OPERATING_RATES = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)


def operating_points(reference_scores: np.ndarray, y: np.ndarray, scores: np.ndarray,
                     rates=OPERATING_RATES) -> list[dict[str, Any]]:
  """What other ``--alert_rate`` values would give: for each target rate, the threshold from
  the calibration reference scores and the resulting test precision / recall / rates."""
  points = []
  y = np.asarray(y, dtype=int)
  known = y >= 0
  for rate in rates:
    threshold = threshold_for_alert_rate(reference_scores, rate) if len(reference_scores) else 1.0
    at = threshold_metrics(y[known], np.asarray(scores)[known], threshold)
    points.append({'target_alert_rate': rate, 'threshold': threshold,
                   'precision': at['precision'], 'recall': at['recall'],
                   'false_positive_rate': at['false_positive_rate'],
                   'alert_rate': float((np.asarray(scores) >= threshold).mean())})
  return points


# ---- the label-free contrast set ---------------------------------------------------------------

def contrast_set(schema: RecordSchema, frame: pd.DataFrame, n: int, seed: int = 7,
                 uniform_share: float = 0.25, widen: float = 0.5) -> pd.DataFrame:
  """Synthetic raw records: each column resampled independently from ``frame`` (a share
  drawn uniformly over a widened range in log space, or a never-seen category). Records
  with no structure: a model that knows the traffic scores them above real held-out ones."""
  rng = np.random.default_rng(seed)
  out = {}
  for name in schema.feature_columns:
    values = frame[name].to_numpy()
    sampled = values[rng.integers(0, len(values), n)]
    widened = rng.random(n) < uniform_share
    if name in schema.categorical_features:
      sampled = sampled.astype(object)
      sampled[widened] = '__never_seen__'
    else:
      numbers = pd.to_numeric(pd.Series(values), errors='coerce').to_numpy(dtype=float)
      logs = np.sign(numbers) * np.log1p(np.abs(numbers))
      logs = logs[np.isfinite(logs)]
      lo, hi = (float(logs.min()), float(logs.max())) if len(logs) else (0.0, 1.0)
      margin = widen * max(hi - lo, 1.0)
      uniform = rng.uniform(lo - margin, hi + margin, int(widened.sum()))
      sampled = sampled.astype(float)
      sampled[widened] = np.sign(uniform) * np.expm1(np.abs(uniform))
    out[name] = sampled
  return pd.DataFrame(out, columns=list(schema.feature_columns))


def contrast_auc(real_scores: np.ndarray, synthetic_scores: np.ndarray) -> Optional[float]:
  real_scores = np.asarray(real_scores, dtype=float)
  synthetic_scores = np.asarray(synthetic_scores, dtype=float)
  if len(real_scores) < MIN_CLASS_ROWS or len(synthetic_scores) < MIN_CLASS_ROWS:
    return None
  y = np.r_[np.zeros(len(real_scores)), np.ones(len(synthetic_scores))]
  return _finite(roc_auc_score(y, np.r_[real_scores, synthetic_scores]))


# ---- what drives the score -----------------------------------------------------------------

def score_sensitivity(detector, frame: pd.DataFrame, columns, seed: int = 0
                      ) -> dict[str, float]:
  """Permutation importance without labels: the mean absolute change of the anomaly score
  when one raw column is shuffled (works for every method, in the columns a person knows)."""
  rng = np.random.default_rng(seed)
  base = detector.anomaly_score(frame)
  result = {}
  for name in columns:
    shuffled = frame.copy()
    shuffled[name] = frame[name].to_numpy()[rng.permutation(len(frame))]
    result[name] = float(np.mean(np.abs(detector.anomaly_score(shuffled) - base)))
  return result


# ---- curves for the report -------------------------------------------------------------------

def curves(y: np.ndarray, scores: np.ndarray, max_points: int = 400) -> dict[str, list]:
  y = np.asarray(y, dtype=int)
  known = y >= 0
  if not has_both_classes(y[known]):
    return {}
  fpr, tpr, _ = roc_curve(y[known], scores[known])
  precision, recall, _ = precision_recall_curve(y[known], scores[known])

  def thin(*arrays):
    step = max(1, len(arrays[0]) // max_points)
    return [a[::step].tolist() + [a[-1].item()] for a in arrays]
  fpr, tpr = thin(fpr, tpr)
  precision, recall = thin(precision, recall)
  return {'fpr': fpr, 'tpr': tpr, 'precision': precision, 'recall': recall}


# ---- champion / challenger -------------------------------------------------------------------

def gate(challenger: dict[str, Any], champion: Optional[dict[str, Any]], metric: str,
         tolerance: float, force: bool) -> tuple[bool, str]:
  """Publish the challenger? Only if it is not worse than the champion on the same held-out
  rows (by more than ``tolerance``), unless forced."""
  new = challenger.get(metric)
  if force:
    return True, f'forced (--force); {metric} {_fmt(new)}'
  if champion is None:
    return True, 'no current model to compare with'
  if champion.get('error'):
    return True, f"the current model cannot be evaluated: {champion['error']}"
  old = champion.get(metric)
  if new is None and old is None:
    return False, (f'{metric} cannot be measured on the held-out data for either model; '
                   'use --force to publish anyway')
  if old is None:
    return True, f'the current model has no {metric}; the new one has {_fmt(new)}'
  if new is None:
    return False, f'the new model has no {metric} (the current one has {_fmt(old)})'
  if new >= old - tolerance:
    return True, (f'{metric} {_fmt(new)} vs current {_fmt(old)}: not worse '
                  f'(tolerance {tolerance})')
  return False, (f'{metric} {_fmt(new)} is worse than the current model\'s {_fmt(old)} '
                 f'(tolerance {tolerance}); use --force to publish anyway')


def _fmt(value) -> str:
  return 'n/a' if value is None else f'{value:.4f}'
