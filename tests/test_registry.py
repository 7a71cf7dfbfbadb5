"""The model registry: versions, manifests, integrity, and the model contract."""

import json
import os
import shutil

import numpy as np
import pytest

from model import registry
from model.features import frame_from_records
from schemas.records import PROCESS
from tests.factories import BASE_TS, process_record
from transforms.cleaning import clean_record


@pytest.fixture
def own_registry(model_dir, tmp_path):
  path = str(tmp_path / 'models')
  shutil.copytree(model_dir, path)
  return path


def test_published_models_keep_the_contract(model_dir):
  loaded = registry.load(model_dir, 'process')
  records = [clean_record(PROCESS, process_record(1, 10 + i, 'x', BASE_TS, attack=i % 2 == 1))
             for i in range(6)]
  frame = frame_from_records(PROCESS, records)
  scores = loaded.estimator.predict_proba(frame)[:, 1]
  assert ((scores >= 0) & (scores <= 1)).all()
  np.testing.assert_array_equal(loaded.estimator.predict(frame), [0, 1, 0, 1, 0, 1])
  manifest = loaded.manifest
  assert manifest['feature_columns'] == list(PROCESS.feature_columns)
  assert manifest['training_rows'] == 400
  assert set(manifest['library_versions']) >= {'scikit-learn', 'numpy', 'pandas', 'apache-beam'}


def test_newest_version_wins_and_half_published_versions_are_invisible(own_registry):
  first = registry.latest_version(own_registry, 'network')
  model = registry.load(own_registry, 'network').estimator
  second = registry.publish(own_registry, 'network', model, feature_columns=['a'],
                            training_rows=1)
  assert second > first
  assert registry.list_versions(own_registry, 'network') == [first, second]
  # A version folder without its manifest (a publisher that died mid-way) is not a version.
  os.makedirs(os.path.join(own_registry, 'network', '99991231T000000000000Z'))
  assert registry.latest_version(own_registry, 'network') == second


def test_a_tampered_model_is_refused_with_a_clear_error(own_registry):
  version = registry.latest_version(own_registry, 'memory')
  path = os.path.join(own_registry, 'memory', version, registry.MODEL_FILE)
  with open(path, 'ab') as f:
    f.write(b'\0')
  with pytest.raises(registry.ModelIntegrityError, match='sha256 .* but the manifest says'):
    registry.load(own_registry, 'memory', version)


def test_manifest_records_the_checksum_of_the_file_it_sits_beside(own_registry):
  import hashlib
  version = registry.latest_version(own_registry, 'process')
  folder = os.path.join(own_registry, 'process', version)
  with open(os.path.join(folder, registry.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  with open(os.path.join(folder, manifest['model_file']), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == manifest['sha256']


def test_an_empty_registry_says_how_to_train(tmp_path):
  with pytest.raises(registry.NoModelError, match='python -m pipelines.retrain --detector net'):
    registry.load(str(tmp_path), 'network')
