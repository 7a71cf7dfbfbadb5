"""RegistryModelHandler: scoring batches and switching to newer versions while running."""

import shutil
import time

from model import registry
from schemas.records import NETWORK
from tests.factories import message, network_record
from transforms.inference import RegistryModelHandler
from transforms.parse import parse_messages


def network_batch(*records):
  batch, dead = parse_messages(NETWORK, [message('network', r, offset=i)
                                         for i, r in enumerate(records)])
  assert not dead
  return batch


def test_handler_scores_a_batch_and_names_the_version(model_dir):
  handler = RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0)
  live = handler.load_model()
  batch = network_batch(*(network_record(i, attack=i == 1) for i in range(3)))
  [scored] = handler.run_inference([batch], live)
  assert scored.columns['prediction'] == [0, 1, 0]
  assert scored.columns['score'][1] > scored.columns['score'][0]
  assert set(scored.columns['model_version']) == {registry.latest_version(model_dir, 'network')}
  # The records themselves are carried through, with where they came from.
  assert scored.columns['uuid'] == batch.columns['uuid']
  assert scored.messages == batch.messages


def test_a_newly_published_version_is_served_without_a_restart(model_dir, tmp_path):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  handler = RegistryModelHandler(NETWORK, models, refresh_seconds=0.05)
  live = handler.load_model()
  batch = [network_batch(network_record(0))]

  def served_version():
    [scored] = handler.run_inference(batch, live)
    return scored.columns['model_version'][0]
  v1 = served_version()

  # A corrupt newer version is skipped: scoring goes on with the current model.
  estimator = registry.load(models, 'network').estimator
  bad = registry.publish(models, 'network', estimator, feature_columns=[], training_rows=1)
  with open(f'{models}/network/{bad}/{registry.MODEL_FILE}', 'ab') as f:
    f.write(b'tampered')
  time.sleep(0.1)
  assert served_version() == v1

  good = registry.publish(models, 'network', estimator, feature_columns=[], training_rows=1)
  time.sleep(0.1)
  assert served_version() == good > v1
