"""The steps of a retrain, independent of Beam: each takes small arguments (a config, the
staged sample's description, one grid point) and reads the training sample itself, so the
retrain pipeline can fan them out as elements over any number of workers.

1. :func:`stage_sample` writes the deduplicated uniform sample (built by the pipeline) as one
   Parquet file with its split (train / calibration / test) and CV fold, and describes it.
2. :func:`cv_tasks` / :func:`run_cv_task`: grid point x fold -> validation metrics.
3. model.selection: the best grid point of each method, and the method to publish.
4. :func:`fit_final`: one method with its best point on the whole train split; threshold on
   the calibration split; metrics on the test split; model and scores staged.
5. :func:`evaluate_champion`: the currently published model on the same test split.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from model import criteria, dataset, evaluation, methods, registry
from model.features import preprocessor
from model.results import CandidateResult, ChampionResult
from schemas.records import SCHEMAS

log = logging.getLogger(__name__)
SAMPLE_FILE = 'sample.parquet'
SPLIT, FOLD = '_split', '_fold'
MIN_REFERENCE_ROWS = 100
CONTRAST_ROWS = 20_000
IMPORTANCE_ROWS = 2_000


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
  detector: str
  model_dir: str
  staging_dir: str
  methods: tuple[str, ...] = ()  # empty: methods.auto_methods
  grid: Any = 'default'  # 'default' | 'small' | 'none' | {method: {param: [values]}}
  folds: int = 3
  grid_rows: int = 50_000
  alert_rate: float = 0.01
  threshold_policy: str = 'auto'  # auto | alert_rate | f1
  reference: str = 'auto'  # auto | normal | all (unsupervised methods' training rows)
  select_metric: str = 'auto'  # auto | roc_auc | pr_auc
  test_fraction: float = 0.2
  calibration_fraction: float = 0.1
  n_jobs: Optional[int] = -1
  seed: int = 0
  # signing.PublicKeys trusted for the current model (the champion); None: the reader's default.
  public_keys: Any = None

  @property
  def schema(self):
    return SCHEMAS[self.detector]

  @property
  def metric(self) -> str:
    return (evaluation.PRIMARY[self.detector] if self.select_metric == 'auto'
            else self.select_metric)

  @property
  def policy(self) -> str:
    if self.threshold_policy != 'auto':
      return self.threshold_policy
    return 'f1' if self.schema.supervised_by_default else 'alert_rate'


# ---- staged files ----------------------------------------------------------------------------

def write_bytes(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def write_json(path: str, value: Any) -> None:
  write_bytes(path, json.dumps(value, indent=2, sort_keys=True, default=_json_default)
              .encode('utf-8'))


def read_json(path: str) -> Any:
  return json.loads(read_bytes(path))


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'not JSON serialisable: {type(value).__name__}')


def _storable(values) -> np.ndarray:
  array = np.asarray(values)
  # Object arrays would be stored as pickles, which the reader would have to unpickle.
  return array.astype(str) if array.dtype == object else array


def write_arrays(path: str, **arrays) -> None:
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **{k: _storable(v) for k, v in arrays.items()})
  write_bytes(path, buffer.getvalue())


def read_arrays(path: str) -> dict[str, np.ndarray]:
  # The staging dir is as writable as the registry: nothing read from it may run code.
  with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


_SAMPLES: dict[str, pd.DataFrame] = {}


def load_sample(path: str) -> pd.DataFrame:
  """The staged sample, read once per worker process."""
  if path not in _SAMPLES:
    with FileSystems.open(path) as f:
      table = pq.read_table(pa.BufferReader(f.read()))
    _SAMPLES.clear()  # one retrain at a time per process: keep memory to one sample
    _SAMPLES[path] = table.to_pandas()
  return _SAMPLES[path]


# ---- 1. the sample -----------------------------------------------------------------------------

def stage_sample(config: RetrainConfig, sample: pa.Table) -> dict[str, Any]:
  """Adds split and fold, writes the sample, decides the reference rows; returns the sample's
  description (the side input of every later step)."""
  if sample.num_rows == 0:
    raise ValueError('the input holds no records: nothing to train on')
  group = sample.column(dataset.GROUP).to_numpy()
  split = dataset.split_of(group, config.test_fraction, config.calibration_fraction)
  sample = sample.append_column(SPLIT, pa.array(split, pa.int8()))
  sample = sample.append_column(FOLD, pa.array(dataset.fold_of(group, config.folds)))
  path = FileSystems.join(config.staging_dir, SAMPLE_FILE)
  buffer = io.BytesIO()
  pq.write_table(sample, buffer, compression='zstd')
  write_bytes(path, buffer.getvalue())
  y = sample.column(dataset.Y).to_numpy()
  labels = pd.Series(sample.column(dataset.LABEL).to_numpy(zero_copy_only=False))
  train = split == 0
  has_labels = evaluation.has_both_classes(y[y >= 0])
  supervised_possible = has_labels and evaluation.has_both_classes(y[train & (y >= 0)])
  normal_train = int(((y == 0) & train).sum())
  if config.reference == 'auto':
    reference = 'normal' if has_labels and normal_train >= MIN_REFERENCE_ROWS else 'all'
  else:
    reference = config.reference
  chosen = tuple(config.methods) or methods.auto_methods(config.detector, has_labels)
  for method in chosen:
    if method in methods.SUPERVISED and not supervised_possible:
      raise ValueError(
          f'method {method} learns from labels, but the {config.detector} input has too few '
          f'labelled attack and normal records (column {config.schema.label_column}); '
          + ('host detectors are trained on labelled archives'
             if config.schema.supervised_by_default
             else 'use --method ' + ' or '.join(methods.UNSUPERVISED)))
  if reference == 'normal' and normal_train < MIN_REFERENCE_ROWS and any(
      m in methods.UNSUPERVISED for m in chosen):
    raise ValueError(f'--reference normal needs at least {MIN_REFERENCE_ROWS} records labelled '
                     f'normal in the train split; there are {normal_train}')
  times = sample.column(dataset.TIME).to_numpy(zero_copy_only=False)
  info = {
      'path': path, 'rows': int(sample.num_rows),
      'split_rows': {s: int((split == i).sum()) for i, s in enumerate(dataset.SPLITS)},
      'labelled_rows': int((y >= 0).sum()), 'attack_rows': int((y == 1).sum()),
      'normal_rows': int((y == 0).sum()), 'has_labels': bool(has_labels),
      'reference': reference, 'methods': list(chosen),
      'label_counts': {str(k): int(v) for k, v in
                       labels.value_counts(dropna=True).head(30).items()},
      'sample_time_range': dataset.time_range(times),
  }
  log.info('staged %d sample rows at %s (reference: %s, methods: %s)', info['rows'], path,
           reference, ', '.join(chosen))
  return info


# ---- 2. cross-validation ---------------------------------------------------------------------

def cv_tasks(config: RetrainConfig, info: dict[str, Any]) -> list[dict[str, Any]]:
  """grid point x fold, when labels can judge; without labels, one label-free criterion task
  per grid point of the methods that have a criterion (model/criteria.py)."""
  if not info['has_labels']:
    return label_free_tasks(config, info)
  if config.folds < 2:
    return []
  tasks = []
  for method in info['methods']:
    points = methods.grid_points(method, config.grid)
    if len(points) == 1 and len(info['methods']) == 1:
      continue  # nothing to choose
    for point_id, params in enumerate(points):
      for fold in range(config.folds):
        tasks.append({'method': method, 'point': point_id, 'params': params, 'fold': fold})
  return tasks


def label_free_tasks(config: RetrainConfig, info: dict[str, Any]) -> list[dict[str, Any]]:
  """The mass-volume criterion of each grid point of the label-free methods; none when a single
  method with a single point leaves nothing to choose."""
  chosen = [m for m in info['methods'] if m in methods.UNSUPERVISED]
  tasks = []
  for method in chosen:
    if method == methods.LABEL_FREE_BASELINE and len(chosen) > 1:
      points = [methods.default_params(method, has_labels=False)]
    else:
      points = methods.grid_points(method, config.grid)
    for point_id, params in enumerate(points):
      tasks.append({'method': method, 'point': point_id, 'params': params, 'fold': None,
                    'criterion': criteria.CRITERION})
  if len(tasks) == 1:
    return []
  return tasks


def run_criterion_task(config: RetrainConfig, info: dict[str, Any], task: dict[str, Any]
                       ) -> dict[str, Any]:
  """One candidate's label-free criterion: fitted on the train split, measured on the
  calibration split (both through the same fitted preprocessor)."""
  schema = config.schema
  frame = _frames(config, info)
  train, calibration = frame[frame[SPLIT] == 0], frame[frame[SPLIT] == 1]
  if config.grid_rows and len(train) > config.grid_rows:
    order = dataset.subsample_order(train[dataset.KEY].to_numpy())
    train = train.iloc[np.sort(order[:config.grid_rows])]
  features = preprocessor(schema).fit(dataset.feature_frame(schema, train))
  started = time.perf_counter()
  value = criteria.evaluate(
      task['method'], task['params'], features.transform(dataset.feature_frame(schema, train)),
      features.transform(dataset.feature_frame(schema, calibration)),
      len(schema.numeric_features), seed=config.seed)
  seconds = time.perf_counter() - started
  log.info('criterion %s %s: %s %.5f in %.1fs', task['method'], task['params'],
           criteria.CRITERION, value[criteria.CRITERION], seconds)
  return {**task, **value, 'fit_rows': int(len(train)),
          'validation_rows': int(len(calibration)), 'fit_seconds': seconds}


def _frames(config: RetrainConfig, info: dict[str, Any]) -> pd.DataFrame:
  return load_sample(info['path'])


def _fit_rows(config: RetrainConfig, info: dict[str, Any], method: str,
              frame: pd.DataFrame) -> pd.DataFrame:
  """The rows a method learns from: the reference rows (unsupervised) or the labelled ones."""
  y = frame[dataset.Y].to_numpy()
  if method in methods.SUPERVISED:
    return frame[y >= 0]
  if info['reference'] == 'normal':
    return frame[y == 0]
  return frame


def _fit(config: RetrainConfig, method: str, params: dict[str, Any], rows: pd.DataFrame):
  X = dataset.feature_frame(config.schema, rows)
  y = rows[dataset.Y].to_numpy() if method in methods.SUPERVISED else None
  return methods.fit(config.schema, method, params, X, y, n_jobs=config.n_jobs,
                     random_state=config.seed)


def run_cv_task(config: RetrainConfig, info: dict[str, Any], task: dict[str, Any]
                ) -> dict[str, Any]:
  if task.get('criterion'):
    return run_criterion_task(config, info, task)
  frame = _frames(config, info)
  train = frame[frame[SPLIT] == 0]
  if config.grid_rows and len(train) > config.grid_rows:
    order = dataset.subsample_order(train[dataset.KEY].to_numpy())
    train = train.iloc[np.sort(order[:config.grid_rows])]
  validation = train[train[FOLD] == task['fold']]
  fit_on = _fit_rows(config, info, task['method'], train[train[FOLD] != task['fold']])
  started = time.perf_counter()
  detector = _fit(config, task['method'], task['params'], fit_on)
  fit_seconds = time.perf_counter() - started
  scores = detector.anomaly_score(dataset.feature_frame(config.schema, validation))
  y = validation[dataset.Y].to_numpy()
  metrics = evaluation.ranking_metrics(y[y >= 0], scores[y >= 0])
  point = {k: v for k, v in task['params'].items() if methods.DEFAULTS[task['method']].get(k) != v}
  log.info('cv %s %s fold %d: %s in %.1fs on %d rows', task['method'], point or '(defaults)',
           task['fold'], ', '.join(f'{k} {v:.4f}' for k, v in metrics.items() if v is not None),
           fit_seconds, len(fit_on))
  return {**task, **metrics, 'fit_rows': int(len(fit_on)), 'validation_rows': int(len(y)),
          'fit_seconds': fit_seconds}


# ---- 4. final models -------------------------------------------------------------------------

def fit_final(config: RetrainConfig, info: dict[str, Any], method: str,
              params: dict[str, Any]) -> CandidateResult:
  """Fits on the whole train split; calibrates; evaluates on the test split; stages the model
  (``candidate-<method>.skops``, see :func:`model.registry.dumps_model`) and its test scores (``eval-<method>.npz``)."""
  schema = config.schema
  frame = _frames(config, info)
  train = frame[frame[SPLIT] == 0]
  calibration = frame[frame[SPLIT] == 1]
  test = frame[frame[SPLIT] == 2]
  fit_on = _fit_rows(config, info, method, train)
  started = time.perf_counter()
  detector = _fit(config, method, params, fit_on)
  fit_seconds = time.perf_counter() - started
  log.info('fitted %s on %d rows in %.1fs', method, len(fit_on), fit_seconds)

  # The threshold, from rows the model has not seen.
  cal_y = calibration[dataset.Y].to_numpy()
  cal_scores = detector.anomaly_score(dataset.feature_frame(schema, calibration))
  reference = (cal_y == 0) if info['has_labels'] else np.ones(len(cal_y), dtype=bool)
  threshold, rule = evaluation.calibrate(cal_scores, cal_y, config.policy, config.alert_rate,
                                         reference)
  detector.threshold = threshold
  calibration_metrics = evaluation.ranking_metrics(cal_y[cal_y >= 0], cal_scores[cal_y >= 0])
  if not info['has_labels']:
    # What chooses between label-free methods (model/selection.py), on rows the test keeps
    # out of the choice.
    cal_X = dataset.feature_frame(schema, calibration)
    calibration_metrics[evaluation.UNLABELLED_METRIC] = evaluation.contrast_auc(
        cal_scores, detector.anomaly_score(contrast_frame(config, cal_X)))

  test_X = dataset.feature_frame(schema, test)
  scores = detector.anomaly_score(test_X)
  contrast = contrast_frame(config, test_X)
  contrast_scores = detector.anomaly_score(contrast)
  y = test[dataset.Y].to_numpy()
  labels = test[dataset.LABEL].to_numpy(dtype=object)
  metrics = evaluation.evaluate(y, scores, threshold, labels, contrast_scores)
  metrics['calibration'] = calibration_metrics
  metrics['operating_points'] = evaluation.operating_points(cal_scores[reference], y, scores)

  sample = test_X.iloc[:IMPORTANCE_ROWS]
  importances = {
      'score_sensitivity': evaluation.score_sensitivity(detector, sample, schema.feature_columns,
                                                        seed=config.seed),
      'model': methods.native_importances(detector, schema),
  }
  data, model_format = registry.dumps_model(detector)
  model_path = FileSystems.join(config.staging_dir, f'candidate-{method}.{model_format}')
  write_bytes(model_path, data)
  eval_path = FileSystems.join(config.staging_dir, f'eval-{method}.npz')
  write_arrays(eval_path, y=y, scores=scores, labels=labels, contrast_scores=contrast_scores)
  return CandidateResult(
      method=method, params=params, threshold=threshold, threshold_rule=rule, metrics=metrics,
      importances=importances, fit_seconds=fit_seconds, training_rows=int(len(fit_on)),
      model_path=model_path, eval_path=eval_path, model_format=model_format)


def contrast_frame(config: RetrainConfig, test_X: pd.DataFrame) -> pd.DataFrame:
  """The label-free contrast set: the same rows for every model of one run (seeded)."""
  return evaluation.contrast_set(config.schema, test_X, min(CONTRAST_ROWS, max(len(test_X), 1)),
                                 seed=config.seed + 7)


# ---- 5. the champion -------------------------------------------------------------------------

def evaluate_champion(config: RetrainConfig, info: dict[str, Any]) -> Optional[ChampionResult]:
  """The published model's metrics on the same test split (None when there is none)."""
  try:
    loaded = registry.load(config.model_dir, config.detector, public_keys=config.public_keys)
  except registry.NoModelError as e:
    if not e.refused:
      return None
    # Versions exist but none verifies: the newest is the champion that cannot be evaluated.
    version = max(e.refused, key=registry.version_time)
    error = e.refused[version]
    log.warning('current %s model %s cannot be loaded: %s', config.detector, version, error)
    return ChampionResult(version=version, error=f'{type(error).__name__}: {error}')
  except Exception as e:  # pylint: disable=broad-except
    version = registry.latest_version(config.model_dir, config.detector)
    log.warning('current %s model %s cannot be loaded: %s', config.detector, version, e)
    return ChampionResult(version=version, error=f'{type(e).__name__}: {e}')
  schema = config.schema
  test = _frames(config, info)
  test = test[test[SPLIT] == 2]
  test_X = dataset.feature_frame(schema, test)
  try:
    scores = loaded.estimator.predict_proba(test_X)[:, 1]
    contrast_scores = loaded.estimator.predict_proba(contrast_frame(config, test_X))[:, 1]
  except Exception as e:  # pylint: disable=broad-except
    return ChampionResult(version=loaded.version, error=f'cannot score the data: {e}')
  threshold = getattr(loaded.estimator, 'threshold', None)
  if threshold is None:
    threshold = 0.5
  y = test[dataset.Y].to_numpy()
  metrics = evaluation.evaluate(y, scores, float(threshold),
                                test[dataset.LABEL].to_numpy(dtype=object), contrast_scores)
  eval_path = FileSystems.join(config.staging_dir, 'eval-champion.npz')
  write_arrays(eval_path, y=y, scores=scores, contrast_scores=contrast_scores)
  return ChampionResult(version=loaded.version, metrics=metrics, eval_path=eval_path,
                        method=loaded.manifest.get('parameters', {}).get('method'))
