"""Serving a verified model: its forest compiled to ONNX Runtime scores as scikit-learn does,
the compiled form never reaches a pickle or a registry file, and a forest that will not
compile is still served."""

import logging
import pickle

import numpy as np

from model import methods, registry, serving
from model.features import frame_from_records
from schemas.records import NETWORK
from tests.factories import network_record


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
  # Nor a registry file: a skops file holding it would ask for a type off the trusted list.
  data, model_format = registry.dumps_model(served)
  assert model_format == 'skops'
  reloaded = registry.loads_model(data, model_format, allow_pickle=False)
  assert '_compiled' not in reloaded.pipeline.steps[-1][1].__dict__


def test_a_forest_that_does_not_compile_is_served_by_scikit_learn(caplog):
  class Unlucky:
    def compile_for_serving(self):
      raise RuntimeError('no ONNX today')

  model = Unlucky()
  with caplog.at_level(logging.WARNING, logger='model.serving'):
    assert serving.compile_for_serving(model) is model
  assert 'could not compile the Unlucky forest' in caplog.text
