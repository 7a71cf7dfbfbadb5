"""Shared fixtures: a model registry with small models trained on factory records, signed
with a key pair made for the test session."""

from __future__ import annotations

import os

import pytest

from model import registry, signing
from model.detector import fit_supervised
from model.features import frame_from_records
from schemas.records import MEMORY, NETWORK, PROCESS, SCHEMAS
from tests.factories import BASE_TS, memory_record, network_record, process_record
from transforms.cleaning import clean_record


@pytest.fixture(scope='session', autouse=True)
def model_keys(tmp_path_factory):
  """The session's model signing key pair, found by every publisher and reader (this process
  and the jobs it starts) through the environment, as a user's would be through theirs."""
  folder = tmp_path_factory.mktemp('model-keys')
  private, public = str(folder / signing.SIGNING_KEY_FILE), str(folder / signing.PUBLIC_KEY_FILE)
  key = signing.generate(private, public)
  saved = {name: os.environ.get(name) for name in (signing.SIGNING_KEY_ENV, signing.PUBLIC_KEY_ENV)}
  os.environ[signing.SIGNING_KEY_ENV], os.environ[signing.PUBLIC_KEY_ENV] = private, public
  yield key
  for name, value in saved.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value


def _training_set(schema, raw_records, labels):
  cleaned = [clean_record(schema, r) for r in raw_records]
  return frame_from_records(schema, cleaned), labels


def train_factory_models(model_dir: str) -> dict[str, str]:
  """Publishes one small model per detector; returns {detector: version}."""
  labels = [i % 4 == 0 for i in range(400)]
  sets = {
      'network': _training_set(
          NETWORK, [network_record(i, attack=a) for i, a in enumerate(labels)], labels),
      'process': _training_set(
          PROCESS, [process_record(i % 7, 100 + i, f'cmd{i % 5}', BASE_TS + i, a)
                    for i, a in enumerate(labels)], labels),
      'memory': _training_set(
          MEMORY, [memory_record(i % 7, 100 + i, f'cmd{i % 5}', BASE_TS + i, a)
                   for i, a in enumerate(labels)], labels),
  }
  return _publish_supervised(model_dir, sets, max_iter=20)


def _publish_supervised(model_dir: str, sets, max_iter: int) -> dict[str, str]:
  """{detector: (raw frame, labels)} -> one published supervised model each."""
  versions = {}
  for detector, (frame, labels) in sets.items():
    schema = SCHEMAS[detector]
    model = fit_supervised(schema, frame[list(schema.feature_columns)], labels,
                           max_iter=max_iter)
    versions[detector] = registry.publish(
        model_dir, detector, model, feature_columns=list(schema.feature_columns),
        training_rows=len(frame))
  return versions


@pytest.fixture(scope='session')
def model_dir(tmp_path_factory, model_keys):
  """A registry with one version per detector, shared by the whole test session (read-only:
  tests that publish make their own copy)."""
  path = str(tmp_path_factory.mktemp('models'))
  train_factory_models(path)
  return path


def train_synthetic_models(model_dir: str, seed: int = 0) -> dict[str, str]:
  """Small supervised models on the generator's synthetic traffic: they flag the generator's
  attacks as a real model would, so end-to-end tests see alerts and joined attack events."""
  import pandas as pd
  from generator.synthetic_host import generate_host
  from generator.synthetic_network import generate_network
  process, memory = generate_host(8, 600, seed=seed, start_ts=BASE_TS, attack_fraction=0.2)
  network = generate_network(5000, seed=seed)
  frames = {
      'network': (network, network['label'] != 'normal'),
      'process': (pd.DataFrame(process), pd.DataFrame(process)['attack'] == 1),
      'memory': (pd.DataFrame(memory), pd.DataFrame(memory)['attack'] == 1),
  }
  return _publish_supervised(model_dir, frames, max_iter=40)


@pytest.fixture(scope='session')
def synthetic_model_dir(tmp_path_factory, model_keys):
  path = str(tmp_path_factory.mktemp('synthetic-models'))
  train_synthetic_models(path)
  return path
