"""Publishing a retrain's result: the champion / challenger gate, the HTML report beside the
version (or among the candidates when it is not published), and the signed manifest's
parameters and metrics. The registry (model/registry.py) does the atomic, signed write.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems

from model import criteria, dataset, evaluation, methods, registry, report, signing, training
from model.profile import PROFILE_FILE, NormalProfile
from model.results import Decision, TrainingSummary

# The metrics the manifest, the summary and the report show first.
HEADLINE = ('roc_auc', 'pr_auc', 'precision', 'recall', 'f1', 'alert_rate',
            'false_positive_rate', 'contrast_auc')


def publish(result: TrainingSummary, config: training.RetrainConfig, *, gate_tolerance: float,
            force: bool = False, no_publish: bool = False, sample_rows: Optional[int] = None,
            signing_key: Optional[signing.SigningKey] = None) -> Decision:
  """The gate, the report and the publication, signed with ``signing_key``."""
  final = result.final
  champion = result.champion
  metric = result.gate_metric
  publish_it, reason = evaluation.gate(final.metrics, champion.gate_input if champion else None,
                                       metric, gate_tolerance, force)
  if no_publish:
    publish_it, reason = False, f'--no_publish (the gate would have said: {reason})'
  version = registry.new_version()
  decision = Decision(publish=publish_it, reason=reason, metric=metric, tolerance=gate_tolerance,
                      version=version if publish_it else None,
                      champion=champion.version if champion else None)
  evals = {name: training.read_arrays(f.eval_path) for name, f in result.finals.items()}
  if champion and champion.eval_path:
    evals['champion'] = training.read_arrays(champion.eval_path)
  detector_dir = FileSystems.join(config.model_dir, config.detector)
  target = FileSystems.join(detector_dir, version if publish_it else f'.candidates/{version}')
  page = report.render(result, evals, decision)
  decision.report = report.write(target, page)
  if publish_it:
    # A staged candidate is skops (only trusted types are built); a joblib one exists only
    # when skops cannot hold the model (registry.dumps_model), as its registry copy will be.
    estimator = registry.loads_model(training.read_bytes(final.model_path), final.model_format,
                                     allow_pickle=final.model_format == 'joblib')
    profile = normal_profile(result, config, estimator)
    decision.version = registry.publish(
        config.model_dir, config.detector, estimator, signing_key=signing_key,
        extra_files={PROFILE_FILE: profile.to_bytes()},
        feature_columns=list(config.schema.feature_columns),
        training_rows=final.training_rows,
        training_time_range=tuple(result.stats['time_range']),
        parameters=manifest_parameters(result, config, sample_rows),
        metrics=manifest_metrics(result, decision), version=version)
  return decision


def profile_rows(result: TrainingSummary, config: training.RetrainConfig,
                 estimator) -> pd.DataFrame:
  """The rows the normal profile describes: the train split's records labelled normal when the
  model learned from those; without labels, the distinct train records the model itself scores
  below its alert threshold (a flood of identical records counts once, and what the model
  alerts on is not "normal")."""
  frame = training.load_sample(result.sample['path'])
  train = frame[frame[training.SPLIT] == 0]
  y = train[dataset.Y].to_numpy()
  if result.sample['reference'] == 'normal' or (result.sample['has_labels']
                                                and result.chosen in methods.SUPERVISED):
    return dataset.feature_frame(config.schema, train[y == 0])
  X = dataset.feature_frame(config.schema, train).drop_duplicates(ignore_index=True)
  threshold = getattr(estimator, 'threshold', None)
  if threshold is not None and len(X):
    below = np.asarray(estimator.predict_proba(X)[:, 1]) < threshold
    if below.any():
      X = X[below]
  return X


def normal_profile(result: TrainingSummary, config: training.RetrainConfig,
                   estimator) -> NormalProfile:
  return NormalProfile.fit(config.schema, profile_rows(result, config, estimator))


def manifest_parameters(result: TrainingSummary, config: training.RetrainConfig,
                        sample_rows: Optional[int]) -> dict[str, Any]:
  final = result.final
  return {
      'method': result.chosen, 'method_description': methods.describe(result.chosen),
      'params': final.params, 'choice': result.why,
      'reference': result.sample['reference'],
      'threshold_policy': config.policy, 'alert_rate': config.alert_rate,
      'threshold_rule': final.threshold_rule, 'select_metric': result.metric,
      'methods_tried': result.sample['methods'], 'grid': config.grid,
      'folds': config.folds, 'grid_rows': config.grid_rows, 'sample_rows': sample_rows,
      'seed': config.seed, 'input': result.input, 'input_format': result.input_format,
      'rows_read': result.stats['rows'], 'duplicates_dropped': result.stats['duplicates'],
      'sample_split_rows': result.sample['split_rows'],
      'sample_time_range': result.sample['sample_time_range'],
      'report': report.REPORT_FILE, 'normal_profile': PROFILE_FILE,
      'criterion': ({'name': criteria.CRITERION, 'description': criteria.describe()}
                    if result.metric == criteria.CRITERION else None),
  }


def manifest_metrics(result: TrainingSummary, decision: Decision) -> dict[str, Any]:
  test = result.final.metrics
  champion = result.champion
  return {
      **{k: test.get(k) for k in HEADLINE},
      'test': test,
      'methods': {m: {k: f.metrics.get(k) for k in HEADLINE} for m, f in result.finals.items()},
      'cv': result.cv,
      'champion': ({'version': champion.version, 'error': champion.error,
                    **{k: (champion.metrics or {}).get(k) for k in HEADLINE}}
                   if champion else None),
      'gate': {'publish': decision.publish, 'reason': decision.reason,
               'metric': decision.metric, 'tolerance': decision.tolerance},
  }
