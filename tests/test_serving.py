"""Serving a verified model: its forest compiled to ONNX Runtime scores as scikit-learn does
(the graph published beside the model, signed with it, and checked against the forest), its
preprocessing compiled to numpy gives the pipeline's matrix bit for bit, the live compiled forms
never reach a pickle or the model file, each distinct row is scored once, and what will not
compile is still served."""

import logging
import os
import pickle

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.detection import KDD_FILE
from generator.synthetic_network import generate_network
from model import methods, registry, serving
from model.detector import ScoredDetector
from model.features import frame_from_columns, frame_from_records, preprocessor
from schemas.kdd import read_kdd_csv
from schemas.records import NETWORK
from tests.factories import message, network_record
from transforms.parse import parse_messages


def _published_forest(model_dir: str):
  records = [network_record(i, attack=i % 5 == 0) for i in range(300)]
  detector = methods.fit(NETWORK, 'rf_synthetic', {'n_estimators': 20, 'max_samples': None},
                         frame_from_records(NETWORK, records), n_jobs=1)
  detector.threshold = 0.6
  return registry.publish(model_dir, 'network', detector,
                          feature_columns=list(NETWORK.feature_columns), training_rows=300)


def test_compiled_forest_scores_as_scikit_learn_does(tmp_path):
  models = str(tmp_path)
  _published_forest(models)
  plain = registry.load(models, 'network').estimator
  served = registry.load_for_serving(models, 'network').estimator
  forest = served.pipeline.steps[-1][1]
  assert isinstance(forest.__dict__.get('_compiled'), serving.OnnxForest)

  # Unseen records, attacks and normal traffic, and some far outside the training range.
  records = [network_record(1000 + i, attack=i % 3 == 0) for i in range(500)]
  records += [{**network_record(2000 + i), 'src_bytes': 10 ** (i % 12)} for i in range(100)]
  frame = frame_from_records(NETWORK, records)
  expected, scores = plain.predict_proba(frame), served.predict_proba(frame)
  assert scores.shape == expected.shape == (600, 2)
  assert np.abs(scores - expected).max() < 1e-5
  assert len(set(np.round(expected[:, 1], 3))) > 5, 'the scores must vary for this to mean much'
  near_threshold = np.abs(expected[:, 1] - served.threshold) < 1e-5
  assert (served.predict(frame) == plain.predict(frame))[~near_threshold].all()


def test_the_compiled_form_never_reaches_a_pickle(tmp_path):
  models = str(tmp_path)
  _published_forest(models)
  plain = registry.load(models, 'network').estimator
  served = registry.load_for_serving(models, 'network').estimator
  assert '_compiled' in served.pipeline.steps[-1][1].__dict__
  assert len(pickle.dumps(served)) == len(pickle.dumps(plain))
  assert '_compiled' not in pickle.loads(pickle.dumps(served)).pipeline.steps[-1][1].__dict__
  assert '_compiled' in served.pipeline.steps[-1][1].__dict__  # pickling left the live one whole
  # Nor a registry file: a skops file holding it would ask for a type off the trusted list.
  data, model_format = registry.dumps_model(served)
  assert model_format == 'skops'
  reloaded = registry.loads_model(data, model_format, allow_pickle=False)
  assert '_compiled' not in reloaded.pipeline.steps[-1][1].__dict__


def _scores_of(estimator, n=200):
  frame = frame_from_records(NETWORK, [network_record(3000 + i, attack=i % 4 == 0)
                                       for i in range(n)])
  return estimator.predict_proba(frame)


def test_the_forest_is_published_with_its_onnx_graph_and_served_from_it(tmp_path, monkeypatch):
  models = str(tmp_path)
  version = _published_forest(models)
  manifest = registry.read_manifest(models, 'network', version)
  assert serving.FOREST_GRAPH_FILE in manifest['files']  # signed with the model
  plain = registry.load(models, 'network').estimator

  def no_conversion(*_):
    raise AssertionError('a reader converted the forest instead of serving the published graph')
  monkeypatch.setattr(serving, 'onnx_graph', no_conversion)
  served = registry.load_for_serving(models, 'network').estimator
  assert isinstance(served.pipeline.steps[-1][1].__dict__.get('_compiled'), serving.OnnxForest)
  assert np.abs(_scores_of(served) - _scores_of(plain)).max() < 1e-5


def test_an_altered_graph_is_refused(tmp_path):
  models = str(tmp_path)
  version = _published_forest(models)
  path = os.path.join(models, 'network', version, serving.FOREST_GRAPH_FILE)
  with open(path, 'r+b') as f:
    f.seek(100)
    f.write(b'\x00')
  with pytest.raises(registry.ModelIntegrityError, match='sha256'):
    registry.load_for_serving(models, 'network')


def test_a_signed_graph_of_another_forest_is_not_served(tmp_path, caplog):
  models = str(tmp_path)
  version = _published_forest(models)
  first = registry.load(models, 'network').estimator
  other = methods.fit(NETWORK, 'rf_synthetic', {'n_estimators': 5, 'max_samples': None},
                      frame_from_records(NETWORK, [network_record(i) for i in range(100)]),
                      n_jobs=1)
  registry.publish(models, 'network', first,
                   extra_files={serving.FOREST_GRAPH_FILE: serving.serving_files(other)[
                       serving.FOREST_GRAPH_FILE]},
                   feature_columns=list(NETWORK.feature_columns), training_rows=300)
  with caplog.at_level(logging.WARNING, logger='model.serving'):
    served = registry.load_for_serving(models, 'network').estimator
  assert 'not serving the published ONNX graph' in caplog.text
  assert registry.load(models, 'network').version != version  # the one with the wrong graph
  # Converted in the reader instead: the first forest's own scores.
  assert isinstance(served.pipeline.steps[-1][1].__dict__.get('_compiled'), serving.OnnxForest)
  assert np.abs(_scores_of(served) - _scores_of(first)).max() < 1e-5


def test_each_distinct_row_is_scored_once_and_every_row_gets_its_score():
  rng = np.random.default_rng(3)
  distinct = rng.normal(size=(7, 4))
  matrix = distinct[rng.integers(0, 7, 200)]
  matrix[5] = -0.0  # a row of negative zeros is a row of its own, and scores as zeros do
  matrix[6] = 0.0
  calls = []

  def score(rows):
    calls.append(len(rows))
    return rows.sum(axis=1) * 10

  assert np.array_equal(serving.score_distinct_rows(score, matrix), matrix.sum(axis=1) * 10)
  assert calls == [len({row.tobytes() for row in matrix})] == [9]
  calls.clear()
  assert np.array_equal(serving.score_distinct_rows(score, distinct), distinct.sum(axis=1) * 10)
  assert calls == [7]


def test_a_flood_of_identical_records_scores_as_each_record_alone(tmp_path):
  models = str(tmp_path)
  _published_forest(models)
  plain = registry.load(models, 'network').estimator
  served = registry.load_for_serving(models, 'network').estimator
  records = [network_record(i % 3, attack=i % 3 == 0) for i in range(300)]  # 3 distinct
  records += [network_record(5000 + i) for i in range(50)]
  batch, _ = parse_messages(NETWORK, [message('network', r) for r in records])
  scores = served.score_columns(NETWORK, batch.columns)
  expected = plain.predict_proba(frame_from_records(NETWORK, records))[:, 1]
  assert np.abs(scores - expected).max() < 1e-5
  assert len(set(scores[:300].round(9))) <= 3


def test_a_forest_that_does_not_compile_is_served_by_scikit_learn(caplog):
  class Unlucky:
    def compile_for_serving(self, graph=None):
      raise RuntimeError('no ONNX today')

  model = Unlucky()
  with caplog.at_level(logging.WARNING, logger='model.serving'):
    assert serving.compile_for_serving(model) is model
  assert 'could not compile the Unlucky forest' in caplog.text


# ---- the compiled preprocessing ---------------------------------------------------------------

def _records(frame):
  """Generator rows as the stream's messages parse them (cleaned columns of a RecordBatch)."""
  rows = frame.drop(columns=['label']).to_dict('records')
  return parse_messages(NETWORK, [message('network', {**network_record(i), **row}, offset=i)
                                  for i, row in enumerate(rows)])[0]


def _odd_records():
  """What training never saw: missing numbers and categories, unseen categories, negative,
  huge and fractional numbers, -0.0."""
  records = [network_record(5000 + i, attack=i % 2 == 0) for i in range(40)]
  records[0].update(src_bytes=None, service=None, duration=None)
  records[1].update(service='never-seen', protocol_type='quic', flag='??')
  records[2].update(src_bytes=-12, dst_bytes=10 ** 15, serror_rate=-0.0, same_srv_rate=0.123456789)
  records[3].update({name: None for name in NETWORK.numeric_features})
  records[4].update(protocol_type='', service=' http ', flag='-')
  return parse_messages(NETWORK, [message('network', r, offset=i)
                                  for i, r in enumerate(records)])[0]


@pytest.fixture(scope='module')
def traffic():
  return generate_network(3000, seed=3)


@pytest.mark.parametrize('method, params', [
    ('gaussian_mixture', {'n_components': 4}),
    ('rf_synthetic', {'n_estimators': 5, 'max_samples': None}),
    ('isolation_forest', {'n_estimators': 20}),
    ('hgb', {'max_iter': 10}),
])
def test_compiled_features_are_the_pipelines_bit_for_bit(tmp_path, traffic, method, params):
  train = frame_from_records(NETWORK, _records(traffic.iloc[:2000]).rows())
  labels = (traffic['label'].iloc[:2000] != 'normal').astype(int).to_numpy()
  detector = methods.fit(NETWORK, method, params, train, labels, n_jobs=1)
  detector.threshold = 0.5
  models = str(tmp_path)
  registry.publish(models, 'network', detector, feature_columns=list(NETWORK.feature_columns),
                   training_rows=2000)
  plain = registry.load(models, 'network').estimator
  served = registry.load_for_serving(models, 'network').estimator
  compiled = served.__dict__.get('_compiled_features')
  assert isinstance(compiled, serving.CompiledFeatures)
  features = plain.pipeline.steps[0][1]
  for batch in (_records(traffic.iloc[2000:]), _odd_records()):
    frame = frame_from_columns(NETWORK, batch.columns)
    expected = np.asarray(features.transform(frame), dtype=np.float64)
    matrix = compiled.transform(batch.columns)
    assert matrix.shape == expected.shape and matrix.tobytes() == expected.tobytes()
    # The same model as the frame path serves (a forest: through ONNX Runtime either way).
    scores = served.score_columns(NETWORK, batch.columns)
    assert scores.tobytes() == served.anomaly_score(frame).tobytes()
    assert len(set(np.round(scores, 6))) > 3, 'the scores must vary for this to mean much'


@pytest.mark.skipif(not os.path.exists(KDD_FILE), reason=f'no KDD Cup 1999 file at {KDD_FILE}')
def test_compiled_features_on_real_kdd_records(tmp_path):
  kdd = read_kdd_csv(KDD_FILE)
  rows = kdd.iloc[np.linspace(0, len(kdd) - 1, 20_000).astype(int)].reset_index(drop=True)
  detector = methods.fit(NETWORK, 'gaussian_mixture', {'n_components': 4},
                         frame_from_records(NETWORK, _records(rows.iloc[::4]).rows()), n_jobs=1)
  served = serving.compile_for_serving(detector)
  compiled = served.__dict__['_compiled_features']
  batch = _records(rows)
  frame = frame_from_columns(NETWORK, batch.columns)
  expected = np.asarray(detector.pipeline.steps[0][1].transform(frame), dtype=np.float64)
  assert compiled.transform(batch.columns).tobytes() == expected.tobytes()
  assert served.score_columns(NETWORK, batch.columns).tobytes() == (
      detector.anomaly_score(frame).tobytes())


@pytest.fixture(scope='module')
def compiled_mixture(traffic):
  train = frame_from_records(NETWORK, _records(traffic.iloc[:1000]).rows())
  detector = methods.fit(NETWORK, 'gaussian_mixture', {'n_components': 2}, train, n_jobs=1)
  return serving.compile_for_serving(detector)


def test_a_batch_the_compiled_form_was_not_built_for_goes_through_scikit_learn(compiled_mixture):
  detector = compiled_mixture
  batch = _odd_records()
  columns = dict(batch.columns)
  # Not a string in a categorical column: the transformer decides what it means.
  columns['service'] = [7] + list(columns['service'][1:])
  assert detector._compiled_features.transform(columns) is None
  frame = frame_from_columns(NETWORK, columns)
  assert detector.score_columns(NETWORK, columns).tobytes() == (
      detector.anomaly_score(frame).tobytes())
  # An infinity: the imputer refuses it, and still does.
  columns = dict(batch.columns)
  columns['src_bytes'] = [float('inf')] + list(columns['src_bytes'][1:])
  assert detector._compiled_features.transform(columns) is None
  with pytest.raises(ValueError, match='(?i)infinity'):
    detector.score_columns(NETWORK, columns)


def test_unseen_values_do_not_grow_the_compiled_lookups(compiled_mixture):
  compiled = compiled_mixture._compiled_features
  sizes = [len(lookup) for lookup in compiled._lookups]
  columns = dict(_odd_records().columns)
  columns['service'] = [f'hostile-{i}' for i in range(len(columns['service']))]
  compiled.transform(columns)
  assert [len(lookup) for lookup in compiled._lookups] == sizes


def test_the_compiled_features_never_reach_a_pickle(compiled_mixture):
  detector = compiled_mixture
  assert b'CompiledFeatures' not in pickle.dumps(detector)
  assert '_compiled_features' not in pickle.loads(pickle.dumps(detector)).__dict__
  # Pickling leaves the live model compiled.
  assert '_compiled_features' in detector.__dict__
  data, model_format = registry.dumps_model(detector)
  reloaded = registry.loads_model(data, model_format, allow_pickle=False)
  assert '_compiled_features' not in reloaded.__dict__


def test_a_preprocessor_of_another_shape_is_served_by_scikit_learn(traffic, caplog):
  train = frame_from_records(NETWORK, _records(traffic.iloc[:500]).rows())
  features = preprocessor(NETWORK)
  numeric = features.transformers[0][1]
  numeric.steps.append(('scale', StandardScaler()))
  pipeline = Pipeline([('features', features), ('model', IsolationForest(n_estimators=5))])
  detector = ScoredDetector(pipeline.fit(train), 'isolation', 0.5)
  with caplog.at_level(logging.WARNING, logger='model.serving'):
    served = serving.compile_for_serving(detector)
  assert '_compiled_features' not in served.__dict__
  assert 'serving the ColumnTransformer preprocessing with scikit-learn' in caplog.text
  batch = _odd_records()
  assert served.score_columns(NETWORK, batch.columns).tobytes() == served.anomaly_score(
      frame_from_columns(NETWORK, batch.columns)).tobytes()
