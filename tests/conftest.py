"""Shared fixtures: a model registry with small models trained on factory records, signed
with a key pair made for the test session. And the one switch for the long tests: marker
``long``, skipped (with the reason) unless ``--full`` is given."""

from __future__ import annotations

import os

import pytest

from model import signing
from tests.helpers import train_factory_models, train_synthetic_models


def pytest_addoption(parser):
  parser.addoption('--full', action='store_true',
                   help='also run the tests marked long (./run_tests.sh --full; see '
                   'docs/operations.md for what they add)')


def pytest_collection_modifyitems(config, items):
  if config.getoption('--full'):
    return
  skip = pytest.mark.skip(reason='long test, not in CI: ./run_tests.sh --full runs it')
  for item in items:
    if item.get_closest_marker('long'):
      item.add_marker(skip)


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


@pytest.fixture(scope='session')
def model_dir(tmp_path_factory, model_keys):
  """A registry with one version per detector, shared by the whole test session (read-only:
  tests that publish make their own copy)."""
  path = str(tmp_path_factory.mktemp('models'))
  train_factory_models(path)
  return path


@pytest.fixture(scope='session')
def synthetic_model_dir(tmp_path_factory, model_keys):
  path = str(tmp_path_factory.mktemp('synthetic-models'))
  train_synthetic_models(path)
  return path
