"""RegistryModelHandler: scoring batches and switching to newer versions while running."""

import shutil
import time

from model import registry
from schemas.records import NETWORK
from tests.factories import network_record
from transforms.cleaning import clean_record
from transforms.inference import RegistryModelHandler


def test_handler_scores_a_batch_and_names_the_version(model_dir):
  handler = RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0)
  live = handler.load_model()
  batch = [clean_record(NETWORK, network_record(i, attack=i == 1)) for i in range(3)]
  scored = list(handler.run_inference(batch, live))
  assert [r['prediction'] for r in scored] == [0, 1, 0]
  assert scored[1]['score'] > scored[0]['score']
  assert {r['model_version'] for r in scored} == {registry.latest_version(model_dir, 'network')}
  assert scored[0]['uuid'] == batch[0]['uuid']  # the record itself is carried through


def test_a_newly_published_version_is_served_without_a_restart(model_dir, tmp_path):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  handler = RegistryModelHandler(NETWORK, models, refresh_seconds=0.05)
  live = handler.load_model()
  batch = [clean_record(NETWORK, network_record(0))]
  v1 = list(handler.run_inference(batch, live))[0]['model_version']

  # A corrupt newer version is skipped: scoring goes on with the current model.
  estimator = registry.load(models, 'network').estimator
  bad = registry.publish(models, 'network', estimator, feature_columns=[], training_rows=1)
  with open(f'{models}/network/{bad}/{registry.MODEL_FILE}', 'ab') as f:
    f.write(b'tampered')
  time.sleep(0.1)
  assert list(handler.run_inference(batch, live))[0]['model_version'] == v1

  good = registry.publish(models, 'network', estimator, feature_columns=[], training_rows=1)
  time.sleep(0.1)
  assert list(handler.run_inference(batch, live))[0]['model_version'] == good > v1
