"""The retrain job: archive -> deduplicated sample -> trained, evaluated, gated, published model.

Whole runs use small generated archives written with pyarrow in the ARCHIVE_SCHEMAS layout, on
the DirectRunner, with small forests so that the file stays fast.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.base import clone

from generator.synthetic_host import generate_host
from generator.synthetic_network import generate_network
from model import dataset, evaluation, methods, profile, registry, sampling, training
from model.detector import ScoredDetector
from model.features import frame_from_records
from pipelines import retrain
from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import MEMORY, NETWORK, PROCESS, SCHEMAS

START = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)
SMALL_FORESTS = json.dumps({'rf_synthetic': {'n_estimators': [30]},
                            'isolation_forest': {'n_estimators': [60]},
                            'hgb': {'max_iter': [60]},
                            'random_forest': {'n_estimators': [40]}})
DUPLICATES = 120


def _write(root, stream, table, name):
  folder = os.path.join(root, 'archive', stream, 'dt=2026-03-01')
  os.makedirs(folder, exist_ok=True)
  pq.write_table(table, os.path.join(folder, name))


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
  """The stream's --output root with a network archive (two files, and a third replaying
  DUPLICATES records, as an at-least-once sink may) and process / memory archives."""
  root = str(tmp_path_factory.mktemp('output'))
  network = dataset.archive_table('network', generate_network(4000, seed=11), start=START)
  assert network.schema.equals(ARCHIVE_SCHEMAS['network'])
  _write(root, 'network', network.slice(0, 2000), 'site-a-1.parquet')
  _write(root, 'network', network.slice(2000), 'site-a-2.parquet')
  _write(root, 'network', network.slice(100, DUPLICATES), 'site-a-replay.parquet')
  process, memory = generate_host(n_machines=12, seconds=240, seed=5, start_ts=1772323200,
                                  attack_fraction=0.15)
  for stream, records in (('process', process), ('memory', memory)):
    table = dataset.archive_table(stream, pd.DataFrame(records), start=START)
    assert table.schema.equals(ARCHIVE_SCHEMAS[stream])
    _write(root, stream, table, 'site-a-1.parquet')
  return root


def _retrain(*args):
  return retrain.run(['--folds', '2', '--param_grid', SMALL_FORESTS, *args])


@pytest.fixture(scope='module')
def network_run(archive, tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('models'))
  outcome = _retrain('--detector', 'network', '--input', archive, '--model_dir', model_dir)
  return model_dir, outcome


# ---- whole runs ------------------------------------------------------------------------------

def test_network_retrain_publishes_a_label_free_model_chosen_on_held_out_labels(network_run):
  model_dir, outcome = network_run
  result, decision = outcome.result, outcome.decision
  assert result.stats['rows'] == 4000 + DUPLICATES
  assert result.stats['duplicates'] == DUPLICATES
  assert result.sample['rows'] == 4000
  # The archive is mostly attacks (like KDD): the label-free methods learn from normal rows.
  assert result.sample['reference'] == 'normal'
  assert set(result.finals) == {'gaussian_mixture', 'rf_synthetic', 'isolation_forest'}
  assert result.cv_tasks == 3 * 2  # one grid point per method x 2 folds
  assert decision.publish and decision.version == registry.latest_version(model_dir,
                                                                              'network')
  chosen = result.finals[result.chosen]
  assert chosen.metrics['roc_auc'] > 0.85
  assert chosen.metrics['false_positive_rate'] < 0.1  # --alert_rate 0.01, 74 rows
  assert result.chosen in result.why


def test_manifest_names_checksum_metrics_parameters_and_training_range(network_run):
  model_dir, outcome = network_run
  version = outcome.decision.version
  folder = os.path.join(model_dir, 'network', version)
  manifest = registry.read_manifest(model_dir, 'network', version)
  with open(os.path.join(folder, registry.MODEL_FILE), 'rb') as f:
    assert manifest['sha256'] == hashlib.sha256(f.read()).hexdigest()
  assert manifest['feature_columns'] == list(NETWORK.feature_columns)
  assert manifest['parameters']['method'] == outcome.result.chosen
  assert manifest['parameters']['reference'] == 'normal'
  assert manifest['parameters']['duplicates_dropped'] == DUPLICATES
  assert 'choice' in manifest['parameters'] and 'normal' in manifest['parameters']['choice']
  for name in ('roc_auc', 'pr_auc', 'precision', 'recall', 'alert_rate'):
    assert manifest['metrics'][name] is not None
  assert manifest['metrics']['gate']['publish'] is True
  assert manifest['training_rows'] == outcome.result.finals[
      outcome.result.chosen].training_rows
  begin, end = manifest['training_time_range']
  assert begin.startswith('2026-03-01T00:00:00') and end > begin
  assert manifest['threshold'] == pytest.approx(
      outcome.result.finals[outcome.result.chosen].threshold)
  # The report sits beside the model, pictures embedded; staging is cleaned up.
  with open(os.path.join(folder, 'report.html'), encoding='utf-8') as f:
    page = f.read()
  assert page.count('<img alt=') >= 4 and 'data:image/png;base64,' in page
  assert 'Detection by label' in page and 'smurf' in page
  assert not os.path.exists(os.path.join(model_dir, '.staging'))


def test_published_network_model_keeps_the_serving_contract(network_run):
  model_dir, _ = network_run
  loaded = registry.load(model_dir, 'network')
  frame = generate_network(300, seed=99)
  records = frame.drop(columns=['label']).to_dict('records')
  records[0]['service'] = 'never_seen_service'  # unseen categories are tolerated
  records[1]['src_bytes'] = None  # and missing numbers
  X = frame_from_records(NETWORK, records)
  scores = loaded.estimator.predict_proba(X)[:, 1]
  assert scores.shape == (300,) and np.isfinite(scores).all()
  predictions = loaded.estimator.predict(X)
  np.testing.assert_array_equal(predictions, (scores >= loaded.estimator.threshold).astype(int))
  attack = (frame['label'] != 'normal').to_numpy()
  assert scores[attack].mean() > scores[~attack].mean()


def test_the_gate_keeps_a_worse_model_out(network_run, archive, tmp_path):
  model_dir, outcome = network_run
  before = registry.list_versions(model_dir, 'network')
  # Density learned from all records of a mostly-attack archive calls the floods normal: a
  # much worse model on the held-out labels.
  worse = _retrain('--detector', 'network', '--input', archive, '--model_dir', model_dir,
                   '--method', 'isolation_forest', '--reference', 'all')
  decision = worse.decision
  assert not decision.publish
  assert 'worse than the current model' in decision.reason
  assert worse.result.champion.version == before[-1]
  assert registry.list_versions(model_dir, 'network') == before
  # Its report is kept for a person to read, outside the versions.
  assert '.candidates' in decision.report and os.path.exists(decision.report)


def test_a_tampered_model_is_refused(network_run, tmp_path):
  import shutil
  model_dir, outcome = network_run
  copy = str(tmp_path / 'models')
  shutil.copytree(model_dir, copy)
  version = outcome.decision.version
  path = os.path.join(copy, 'network', version, registry.MODEL_FILE)
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    f.seek(0)
    f.write(bytes(data))
  with pytest.raises(registry.ModelIntegrityError, match='sha256'):
    registry.load(copy, 'network', version)
  # A retrain does not trust it either: it cannot be the champion, so the gate says why.
  info = {'path': None}
  config = training.RetrainConfig(detector='network', model_dir=copy, staging_dir=str(tmp_path))
  champion = training.evaluate_champion(config, info)
  assert champion.version == version and 'ModelIntegrityError' in champion.error
  publish, reason = evaluation.gate({'roc_auc': 0.5}, champion.gate_input, 'roc_auc', 0.0,
                                    False)
  assert publish and 'cannot be evaluated' in reason


def test_kdd_csv_input(tmp_path):
  frame = generate_network(2500, seed=3)
  frame['label'] = frame['label'] + '.'
  path = tmp_path / 'kddcup.data_small.gz'
  with gzip.open(path, 'wt') as f:
    frame.to_csv(f, header=False, index=False)
  outcome = _retrain('--detector', 'network', '--input', str(path), '--model_dir',
                     str(tmp_path / 'models'), '--method', 'isolation_forest')
  result = outcome.result
  assert result.input_format == 'kdd_csv'
  assert result.stats['rows'] == 2500 and result.stats['duplicates'] == 0
  assert result.sample['label_counts']['smurf'] > 1000  # the trailing dot is gone
  assert outcome.decision.publish
  assert result.finals['isolation_forest'].metrics['roc_auc'] > 0.85


def test_unlabelled_archive_trains_a_mixture_chosen_by_a_label_free_criterion(tmp_path):
  # A real network: few attacks, and the stream archives records without labels.
  frame = generate_network(2500, seed=21, mix={'normal': 0.97, 'neptune': 0.02, 'satan': 0.01})
  truth = (frame['label'] != 'normal').to_numpy()
  table = dataset.archive_table('network', frame.assign(label=None), start=START)
  _write(str(tmp_path), 'network', table, 'site-b-1.parquet')
  outcome = _retrain('--detector', 'network', '--input', str(tmp_path), '--model_dir',
                     str(tmp_path / 'models'))
  result = outcome.result
  assert result.sample['has_labels'] is False and result.sample['reference'] == 'all'
  # The mixture is chosen on the mass-volume criterion; IsolationForest is its baseline.
  assert set(result.finals) == {'gaussian_mixture', 'isolation_forest'}
  assert result.cv_tasks == 2 and result.metric == 'mv_auc'
  assert result.chosen == 'gaussian_mixture' and 'mv_auc' in result.why
  assert all(row['mean'] > 0 for row in result.cv)
  assert result.finals['isolation_forest'].params['max_samples'] == 256
  assert result.gate_metric == 'contrast_auc'
  metrics = result.finals['gaussian_mixture'].metrics
  assert metrics['roc_auc'] is None and metrics['contrast_auc'] > 0.7
  assert metrics['alert_rate'] == pytest.approx(0.01, abs=0.02)  # all records are the reference
  # The report shows the criterion that chose the model and every candidate's value on it.
  with open(outcome.decision.report, encoding='utf-8') as f:
    page = f.read()
  assert 'How the model was chosen without labels' in page and 'mv_auc' in page
  for row in result.cv:
    assert f"{row['mean']:.4f}" in page
  # The normal profile is published beside the model, verified like it.
  loaded = registry.load(str(tmp_path / 'models'), 'network')
  assert profile.PROFILE_FILE in loaded.manifest['files']
  normal = profile.load_profile(loaded, model_dir=str(tmp_path / 'models'))
  assert set(normal.numeric) == set(NETWORK.numeric_features)
  assert normal.rows < result.sample['split_rows']['train']  # distinct, below the threshold
  # The hidden truth: the attacks score above normal traffic.
  scores = loaded.estimator.predict_proba(dataset.feature_frame(NETWORK, frame))[:, 1]
  assert evaluation.ranking_metrics(truth.astype(int), scores)['roc_auc'] > 0.9


@pytest.mark.parametrize('detector', ['process', 'memory'])
def test_host_detectors_are_supervised_on_attack_labels(archive, tmp_path, detector):
  schema = SCHEMAS[detector]
  outcome = _retrain('--detector', detector, '--input', archive, '--model_dir',
                     str(tmp_path / 'models'), '--grid', 'none')
  result = outcome.result
  assert set(result.finals) == set(methods.SUPERVISED)
  assert result.chosen in methods.SUPERVISED
  metrics = result.finals[result.chosen].metrics
  assert metrics['roc_auc'] > 0.85 and metrics['recall'] > 0.3
  assert 'F1' in result.finals[result.chosen].threshold_rule
  loaded = registry.load(str(tmp_path / 'models'), detector)
  # Unknown commands and states are tolerated by the served pipeline.
  row = {c: 1.0 for c in schema.numeric_features}
  row.update({c: 'never-seen' for c in schema.categorical_features})
  scores = loaded.estimator.predict_proba(frame_from_records(schema, [row]))[:, 1]
  assert np.isfinite(scores).all()


def test_help_lists_the_job_flags(capsys):
  assert retrain.main(['--help']) == 0
  text = capsys.readouterr().out
  for flag in ('--detector', '--input', '--model_dir', '--method', '--alert_rate', '--force',
               '--sample_rows', '--runner'):
    assert flag in text


# ---- the pieces --------------------------------------------------------------------------------

def _prepared(n, seed, prefix=''):
  table = dataset.archive_table('network', generate_network(n, seed=seed), start=START,
                                uuid_prefix=prefix)
  return dataset.prepare_batch('network', table)


def test_sample_is_deduplicated_uniform_and_independent_of_bundling(tmp_path):
  a, b = _prepared(600, 1, 'a'), _prepared(600, 2, 'b')
  replay = a.slice(50, 100)

  def combine(bundles, folder):
    parts, cut = [], None
    for bundle in bundles:  # one worker: its cut carries over from bundle to bundle
      part = sampling.PartWriter('network', 500, str(folder), cut)
      for table in bundle:
        part.add(table)
      parts.append(part.write())
      cut = part.sample.cut
    return sampling.merge_parts('network', 500, parts)

  one, stats = combine([[a, replay, b]], tmp_path / 'one')
  other, other_stats = combine([[b], [replay], [a.slice(0, 300), a.slice(300)]], tmp_path / 'two')
  assert one.num_rows == 500
  keys = one.column(dataset.KEY).to_numpy()
  assert len(np.unique(keys)) == 500
  np.testing.assert_array_equal(keys, other.column(dataset.KEY).to_numpy())
  everything = np.unique(np.concatenate([a.column(dataset.KEY).to_numpy(),
                                         b.column(dataset.KEY).to_numpy()]))
  np.testing.assert_array_equal(keys, everything[:500])  # the 500 smallest distinct keys
  for s in (stats, other_stats):
    assert (s['rows'], s['distinct'], s['duplicates']) == (1300, 1200, 100)
  assert other_stats['part_rows'] < 1300  # later bundles were cut


def test_labels_are_normalised_and_splits_are_stable():
  text, y = dataset.normalise_labels(pa.array(['normal.', 'smurf.', ' Neptune', None, '', '1',
                                               '0']))
  assert text.to_pylist() == ['normal', 'smurf', 'neptune', None, None, '1', '0']
  assert y.tolist() == [0, 1, 1, -1, -1, 1, 0]
  keys = _prepared(5000, 4).column(dataset.GROUP).to_numpy()
  split = dataset.split_of(keys)
  shares = np.bincount(split, minlength=3) / len(split)
  assert shares == pytest.approx([0.7, 0.1, 0.2], abs=0.03)
  np.testing.assert_array_equal(split, dataset.split_of(keys.copy()))


def test_host_groups_keep_a_process_in_one_split():
  process, _ = generate_host(n_machines=3, seconds=120, seed=2, start_ts=1772323200)
  table = dataset.prepare_batch(
      'process', dataset.archive_table('process', pd.DataFrame(process), start=START))
  frame = table.to_pandas()
  frame['split'] = dataset.split_of(frame[dataset.GROUP].to_numpy())
  frame['process'] = [f"{r['machine']}|{r['CMD']}_{r['PID']}" for r in process]
  assert (frame.groupby('process')['split'].nunique() == 1).all()


def test_real_vs_synthetic_forest_scores_the_unseen_as_anomalous():
  normal = generate_network(1500, seed=8, mix={'normal': 1.0})
  attacks = generate_network(300, seed=9, mix={'smurf': 1, 'neptune': 1, 'satan': 1})
  X = dataset.feature_frame(NETWORK, normal)
  detector = methods.fit(NETWORK, 'rf_synthetic', {'n_estimators': 40}, X)
  fresh = dataset.feature_frame(NETWORK, generate_network(500, seed=10, mix={'normal': 1.0}))
  normal_scores = detector.anomaly_score(fresh)
  attack_scores = detector.anomaly_score(dataset.feature_frame(NETWORK, attacks))
  y = np.r_[np.zeros(len(normal_scores)), np.ones(len(attack_scores))]
  assert evaluation.ranking_metrics(y, np.r_[normal_scores, attack_scores])['roc_auc'] > 0.9
  # Served without thread pools, and the contract's two columns.
  assert detector.pipeline.named_steps['model'].forest_.n_jobs is None
  assert detector.predict_proba(fresh).shape == (500, 2)


def test_alert_rate_calibration_and_the_gate_rules():
  rng = np.random.default_rng(0)
  scores = rng.random(10_000)
  y = np.zeros(10_000, dtype=int)
  threshold, rule = evaluation.calibrate(scores, y, 'alert_rate', 0.02, y == 0)
  assert (scores >= threshold).mean() == pytest.approx(0.02, abs=0.002)
  assert '2.00%' in rule
  ok, reason = evaluation.gate({'roc_auc': 0.90}, {'roc_auc': 0.95}, 'roc_auc', 0.01, False)
  assert not ok and 'worse' in reason
  assert evaluation.gate({'roc_auc': 0.90}, {'roc_auc': 0.95}, 'roc_auc', 0.01, True)[0]
  assert evaluation.gate({'roc_auc': 0.945}, {'roc_auc': 0.95}, 'roc_auc', 0.01, False)[0]
  assert evaluation.gate({'roc_auc': 0.5}, None, 'roc_auc', 0.0, False)[0]


def test_synthetic_contrast_forest_scores_as_its_random_forest_does():
  """SyntheticContrastForest.predict_proba sums its trees itself (faster when serving); the
  result must be the RandomForest's own, exactly."""
  rng = np.random.default_rng(0)
  X = rng.normal(size=(500, 6))
  forest = methods.SyntheticContrastForest(n_estimators=15, random_state=0).fit(X)
  probe = rng.normal(scale=2.0, size=(300, 6))
  assert np.array_equal(forest.predict_proba(probe), forest.forest_.predict_proba(probe))


def test_every_method_is_a_pipeline_that_clone_refits_to_the_same_model():
  """scikit-learn's convention: everything a model learns is learnt inside its Pipeline, so
  clone(pipeline).fit(X) gives the same model (the real-vs-synthetic forest finds its one-hot
  blocks in the preprocessed matrix's column names, not from a preprocessor fitted outside)."""
  frame = generate_network(1200, seed=4)
  X = dataset.feature_frame(NETWORK, frame)
  y = frame[NETWORK.label_column].ne('normal').astype(int).to_numpy()
  small = {'rf_synthetic': {'n_estimators': 15}, 'isolation_forest': {'n_estimators': 30},
           'hgb': {'max_iter': 30}, 'random_forest': {'n_estimators': 15},
           'gaussian_mixture': {'n_components': 4}}
  for method in methods.METHODS:
    detector = methods.fit(NETWORK, method, small[method], X,
                           y if method in methods.SUPERVISED else None, n_jobs=1)
    refitted = clone(detector.pipeline).fit(X, y if method in methods.SUPERVISED else None)
    again = ScoredDetector(refitted, detector.score_method, detector.threshold)
    np.testing.assert_array_equal(again.anomaly_score(X), detector.anomaly_score(X),
                                  err_msg=method)
  forest = methods.fit(NETWORK, 'rf_synthetic', small['rf_synthetic'], X, n_jobs=1)
  model = forest.pipeline.named_steps['model']
  blocks = methods.column_blocks(forest.pipeline.named_steps['features'],
                                 NETWORK.feature_columns)
  # One block per raw column; a categorical column's one-hot block moves as one.
  assert model.blocks_ == list(blocks.values())
  assert len(blocks['service']) > 1
