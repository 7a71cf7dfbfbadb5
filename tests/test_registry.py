"""The model registry: versions, manifests, integrity, and the model contract; and what
whoever can write into the registry cannot do (real files, real keys: docs/model-registry.md)."""

import base64
import datetime
import hashlib
import json
import logging
import os
import pickle
import shutil

import numpy as np
import pytest
import skops.io as sio
from cryptography.hazmat.primitives.asymmetric import ec

from model import methods, registry, signing
from model.detector import ScoredDetector, fit_isolation_forest, fit_supervised
from model.features import frame_from_records
from pipelines import bootstrap, keys
from schemas.records import NETWORK, PROCESS
from tests.factories import BASE_TS, network_record, process_record
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
  version = registry.latest_version(own_registry, 'process')
  folder = os.path.join(own_registry, 'process', version)
  with open(os.path.join(folder, registry.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  with open(os.path.join(folder, manifest['model_file']), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == manifest['sha256']


def test_an_empty_registry_says_how_to_train(tmp_path):
  with pytest.raises(registry.NoModelError, match='python -m pipelines.retrain --detector net'):
    registry.load(str(tmp_path), 'network')


# ---- hostile storage: whoever can write into the registry ------------------------------------

def _version_dir(models, detector, version):
  return os.path.join(models, detector, version)


def write_version(models, detector, version, model_bytes, *, key=None, model_format='skops',
                  model_file=None, **fields):
  """A version written straight to disk, as anyone with write access to the registry could:
  signed with ``key`` (None: unsigned)."""
  folder = _version_dir(models, detector, version)
  os.makedirs(folder, exist_ok=True)
  model_file = registry.FORMATS[model_format] if model_file is None else model_file
  if model_file and '/' not in model_file and model_file != '..':
    with open(os.path.join(folder, model_file), 'wb') as f:
      f.write(model_bytes)
  manifest = {'detector': detector, 'version': version, 'format': model_format,
              'model_file': model_file, 'sha256': hashlib.sha256(model_bytes).hexdigest(),
              'size_bytes': len(model_bytes), 'feature_columns': [], 'training_rows': 1,
              **fields}
  data = json.dumps(manifest).encode('utf-8')
  with open(os.path.join(folder, registry.MANIFEST_FILE), 'wb') as f:
    f.write(data)
  if key is not None:
    with open(os.path.join(folder, registry.SIGNATURE_FILE), 'wb') as f:
      f.write(key.sign(data))
  return version


def _copy_version(models, detector, version, new_version, new_detector=None):
  shutil.copytree(_version_dir(models, detector, version),
                  _version_dir(models, new_detector or detector, new_version))


def _later(version, seconds=60):
  return registry.new_version(registry.version_time(version) + datetime.timedelta(seconds=seconds))


@pytest.mark.parametrize('name', ['zzzz', 'v2', '99999999T999999999999Z', '20261399T000000000000Z',
                                  '20261123T200102123456', 'latest', '2026-11-23'])
def test_only_timestamp_folders_are_versions(own_registry, name, caplog):
  real = registry.latest_version(own_registry, 'network')
  _copy_version(own_registry, 'network', real, name)  # a complete, validly signed copy
  with caplog.at_level(logging.WARNING, logger='model.registry'):
    assert registry.list_versions(own_registry, 'network') == [real]
    assert registry.list_versions(own_registry, 'network') == [real]
    assert registry.load(own_registry, 'network').version == real
  assert sum('not a model version' in r.getMessage() and repr(name) in r.getMessage()
             for r in caplog.records) == 1, 'logged once, not on every listing'


@pytest.mark.parametrize('name', ['../x', '..', '../../network/20261123T200102123456Z', 'zzzz',
                                  '/etc', ''])
def test_a_version_argument_that_is_not_a_version_is_refused(own_registry, name):
  with pytest.raises(registry.ModelIntegrityError, match='is not a model version'):
    registry.load(own_registry, 'network', name)


def test_versions_sort_by_time(own_registry, model_keys):
  real = registry.latest_version(own_registry, 'process')
  estimator = registry.load(own_registry, 'process').estimator
  times = ['20270101T000000000000Z', '20261231T235959999999Z', '20300101T000000000001Z']
  for version in times:
    registry.publish(own_registry, 'process', estimator, feature_columns=[], training_rows=1,
                     version=version)
  assert registry.list_versions(own_registry, 'process') == [real] + sorted(
      times, key=registry.version_time)
  assert registry.load(own_registry, 'process').version == '20300101T000000000001Z'


def test_an_unsigned_version_is_refused(own_registry):
  version = registry.latest_version(own_registry, 'network')
  os.remove(os.path.join(_version_dir(own_registry, 'network', version), registry.SIGNATURE_FILE))
  with pytest.raises(registry.ModelSignatureError, match='unsigned'):
    registry.load(own_registry, 'network', version)


@pytest.mark.parametrize('edit', ['threshold', 'sha256', 'signature', 'garbage'])
def test_a_manifest_whose_signature_does_not_match_is_refused(own_registry, edit):
  version = registry.latest_version(own_registry, 'network')
  folder = _version_dir(own_registry, 'network', version)
  manifest_path = os.path.join(folder, registry.MANIFEST_FILE)
  signature_path = os.path.join(folder, registry.SIGNATURE_FILE)
  with open(manifest_path) as f:
    manifest = json.load(f)
  if edit == 'threshold':  # one number, the sort that an attacker would want to move
    manifest['threshold'] = 0.999
  elif edit == 'sha256':  # a swapped model file, its checksum updated in the manifest
    model_path = os.path.join(folder, manifest['model_file'])
    with open(model_path, 'ab') as f:
      f.write(b'\0')
    with open(model_path, 'rb') as f:
      manifest['sha256'] = hashlib.sha256(f.read()).hexdigest()
      manifest['size_bytes'] += 1
  if edit in ('threshold', 'sha256'):
    with open(manifest_path, 'w') as f:
      json.dump(manifest, f)
  elif edit == 'signature':
    with open(signature_path) as f:
      document = json.load(f)
    raw = bytearray(base64.b64decode(document['signature']))
    raw[0] ^= 1
    document['signature'] = base64.b64encode(bytes(raw)).decode()
    with open(signature_path, 'w') as f:
      json.dump(document, f)
  else:
    with open(signature_path, 'wb') as f:
      f.write(b'\xff{not json')
  with pytest.raises(registry.ModelSignatureError, match='refusing network model'):
    registry.load(own_registry, 'network', version)


def test_a_version_signed_by_another_key_is_refused_until_readers_trust_it(own_registry,
                                                                           model_keys):
  estimator = registry.load(own_registry, 'memory').estimator
  other = signing.SigningKey.generate()
  version = registry.publish(own_registry, 'memory', estimator, feature_columns=[],
                             training_rows=1, signing_key=other)
  with pytest.raises(registry.ModelSignatureError, match='does not verify against'):
    registry.load(own_registry, 'memory', version)
  # The stream serves the version before it.
  assert registry.load(own_registry, 'memory').version != version
  # During a rotation readers hold both public keys.
  both = model_keys.public + other.public
  assert registry.load(own_registry, 'memory', public_keys=both).version == version


def test_a_signed_manifest_cannot_be_replayed_under_another_name(own_registry):
  version = registry.latest_version(own_registry, 'network')
  newer = _later(version)
  _copy_version(own_registry, 'network', version, newer)
  _copy_version(own_registry, 'network', version, newer, new_detector='process')
  with pytest.raises(registry.ModelIntegrityError, match='signed for .*a manifest copied or renamed'):
    registry.load(own_registry, 'network', newer)
  with pytest.raises(registry.ModelIntegrityError, match='signed for .*a manifest copied or renamed'):
    registry.load(own_registry, 'process', newer)
  assert registry.load(own_registry, 'network').version == version


@pytest.mark.parametrize('model_file', ['../../x', '../model.skops', '/etc/passwd', '..',
                                        'sub/model.skops', 'a\\..\\b', '.hidden', '',
                                        registry.MANIFEST_FILE])
def test_a_manifest_cannot_name_a_file_outside_its_version(own_registry, model_keys,
                                                            model_file):
  version = registry.latest_version(own_registry, 'network')
  newer = _later(version)
  with open(os.path.join(_version_dir(own_registry, 'network', version), registry.MODEL_FILE),
            'rb') as f:
    data = f.read()
  # Validly signed by the trusted key (a publisher's bug, or a stolen key used carelessly):
  # the path is still refused.
  write_version(own_registry, 'network', newer, data, key=model_keys, model_file=model_file)
  with pytest.raises(registry.ModelIntegrityError, match='not a plain file name'):
    registry.load(own_registry, 'network', newer)


def test_a_newest_broken_version_leaves_the_older_good_one_served(own_registry, caplog):
  good = registry.latest_version(own_registry, 'network')
  broken = write_version(own_registry, 'network', _later(good), b'not a model')  # unsigned
  with caplog.at_level(logging.WARNING, logger='model.registry'):
    loaded = registry.load(own_registry, 'network')
  assert loaded.version == good
  assert f'skipping network model {broken}' in caplog.text and 'unsigned' in caplog.text
  assert registry.newest_verified_manifest(own_registry, 'network')[0] == good


def test_when_no_version_verifies_the_error_says_what_to_do(own_registry):
  version = registry.latest_version(own_registry, 'network')
  os.remove(os.path.join(_version_dir(own_registry, 'network', version), registry.SIGNATURE_FILE))
  with pytest.raises(registry.NoModelError) as e:
    registry.load(own_registry, 'network')
  message = str(e.value)
  assert 'none of the 1 network versions' in message and 'unsigned' in message
  assert 'python -m pipelines.retrain --detector network' in message
  assert '--model_public_key' in message and 'docs/model-registry.md' in message
  assert list(e.value.refused) == [version]


class _Payload:
  """Unpickling or rebuilding this object writes a marker file: proof that code ran."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (exec, (f'open({self.marker!r}, "w").write("ran")',))

  def __setstate__(self, state):
    with open(state['marker'], 'w') as f:
      f.write('ran')


def _pickle_payload(marker) -> bytes:
  return pickle.dumps(_Payload(marker))


@pytest.mark.parametrize('model_format', ['joblib', 'skops'])
def test_a_pickle_that_would_run_code_is_never_loaded_without_a_signature(own_registry, tmp_path,
                                                                           model_format):
  marker = tmp_path / 'code-ran'
  good = registry.latest_version(own_registry, 'network')
  evil = write_version(own_registry, 'network', _later(good), _pickle_payload(str(marker)),
                       model_format=model_format)
  with pytest.raises(registry.ModelSignatureError, match='unsigned'):
    registry.load(own_registry, 'network', evil)
  other = signing.SigningKey.generate()
  write_version(own_registry, 'network', evil, _pickle_payload(str(marker)),
                model_format=model_format, key=other)
  with pytest.raises(registry.ModelSignatureError, match='does not verify'):
    registry.load(own_registry, 'network', evil)
  assert registry.load(own_registry, 'network').version == good
  assert not marker.exists(), 'the payload ran'


def test_a_signed_skops_file_still_builds_only_trusted_types(own_registry, model_keys, tmp_path):
  marker = tmp_path / 'code-ran'
  good = registry.latest_version(own_registry, 'network')
  # A pickle in a file that says skops, and a skops file of a type not on the list, both
  # validly signed: neither is built.
  pickled = write_version(own_registry, 'network', _later(good, 1), _pickle_payload(str(marker)),
                          key=model_keys)
  trap = write_version(own_registry, 'network', _later(good, 2),
                       sio.dumps(_Payload(str(marker))), key=model_keys)
  with pytest.raises(registry.ModelIntegrityError, match='not a skops model file'):
    registry.load(own_registry, 'network', pickled)
  with pytest.raises(registry.ModelIntegrityError, match='not on the trusted list: .*_Payload'):
    registry.load(own_registry, 'network', trap)
  assert registry.load(own_registry, 'network').version == good
  assert not marker.exists(), 'the payload ran'
  with pytest.raises(registry.ModelIntegrityError, match='no verified signature'):
    registry.loads_model(_pickle_payload(str(marker)), 'joblib', allow_pickle=False)
  assert not marker.exists()


def test_an_oversized_manifest_is_refused_unread(own_registry):
  version = registry.latest_version(own_registry, 'network')
  newer = _later(version)
  folder = _version_dir(own_registry, 'network', version)
  os.makedirs(_version_dir(own_registry, 'network', newer))
  with open(os.path.join(_version_dir(own_registry, 'network', newer), registry.MANIFEST_FILE),
            'wb') as f:
    f.write(b' ' * (registry.MAX_MANIFEST_BYTES + 1))
  with pytest.raises(registry.ModelIntegrityError, match='larger than'):
    registry.load(own_registry, 'network', newer)
  assert os.path.isdir(folder)


def _detectors_the_retrain_publishes():
  records = [network_record(i, attack=i % 5 == 0) for i in range(300)]
  X = frame_from_records(NETWORK, records)
  y = [i % 5 == 0 for i in range(300)]
  small = {'rf_synthetic': {'n_estimators': 5}, 'isolation_forest': {'n_estimators': 5},
           'hgb': {'max_iter': 5}, 'random_forest': {'n_estimators': 5}}
  fitted = {m: methods.fit(NETWORK, m, p, X, y, n_jobs=1) for m, p in small.items()}
  fitted['fit_supervised'] = fit_supervised(NETWORK, X, y, max_iter=5)
  fitted['fit_isolation_forest'] = fit_isolation_forest(NETWORK, X, n_estimators=5)
  process_records = [clean_record(PROCESS, process_record(i % 3, i, 'x', BASE_TS + i, i % 4 == 0))
                     for i in range(200)]
  process_X = frame_from_records(PROCESS, process_records)
  process_y = [i % 4 == 0 for i in range(200)]
  for method in ('hgb', 'random_forest'):
    fitted[f'process-{method}'] = methods.fit(PROCESS, method, small[method], process_X,
                                              process_y, n_jobs=1)
  return fitted, {'network': X, 'process': process_X}


def test_every_detector_type_the_retrain_publishes_round_trips_through_skops(tmp_path):
  fitted, frames = _detectors_the_retrain_publishes()
  models = str(tmp_path)
  for name, detector in fitted.items():
    stream = 'process' if name.startswith('process-') else 'network'
    detector.threshold = 0.42
    version = registry.publish(models, stream, detector, feature_columns=[], training_rows=1)
    loaded = registry.load(models, stream, version)
    assert loaded.manifest['format'] == 'skops', name
    assert loaded.manifest['model_file'] == 'model.skops'
    assert type(loaded.estimator) is type(detector)
    assert loaded.estimator.threshold == 0.42
    frame = frames[stream]
    np.testing.assert_array_equal(loaded.estimator.predict_proba(frame),
                                  detector.predict_proba(frame), err_msg=name)
    np.testing.assert_array_equal(loaded.estimator.predict(frame), detector.predict(frame))
    with open(os.path.join(models, stream, version, 'model.skops'), 'rb') as f:
      assert f.read(2) == b'PK', 'a skops (zip) file, not a pickle'


def _not_on_the_trusted_list(x):
  return x


def test_a_model_skops_cannot_hold_is_published_as_a_signed_pickle(tmp_path, caplog):
  # A function that is not on the trusted list: skops would store it, readers would refuse it.
  detector = ScoredDetector(pipeline=None, threshold=0.3)
  detector.extra = _not_on_the_trusted_list
  with caplog.at_level(logging.WARNING, logger='model.registry'):
    version = registry.publish(str(tmp_path), 'network', detector, feature_columns=[],
                               training_rows=1)
  assert 'storing it as a joblib pickle' in caplog.text
  manifest = registry.read_manifest(str(tmp_path), 'network', version)
  assert manifest['format'] == 'joblib' and manifest['model_file'] == 'model.joblib'
  loaded = registry.load(str(tmp_path), 'network', version)
  assert loaded.estimator.extra is _not_on_the_trusted_list and loaded.estimator.threshold == 0.3


# ---- keys ----------------------------------------------------------------------------------

def test_keys_cli_makes_a_pair_once_and_shows_its_id(tmp_path, capsys):
  private, public = str(tmp_path / 'k' / 'sign.key'), str(tmp_path / 'k' / 'sign.pub')
  assert keys.main(['generate', '--signing_key', private, '--public_key', public]) == 0
  assert os.stat(private).st_mode & 0o077 == 0, 'the private key is readable by its owner only'
  key = signing.SigningKey.load(private)
  assert key.key_id in capsys.readouterr().out
  with open(private, 'rb') as f:
    before = f.read()
  assert keys.main(['generate', '--signing_key', private, '--public_key', public]) == 1
  assert 'not overwriting' in capsys.readouterr().err
  with open(private, 'rb') as f:
    assert f.read() == before
  assert keys.main(['show', '--public_key', public]) == 0
  assert f'{key.key_id}  {public}' in capsys.readouterr().out
  assert signing.reader_keys(public) == key.public


def test_bootstrap_makes_the_default_pair_once_and_never_for_a_lone_public_key(tmp_path,
                                                                               monkeypatch):
  monkeypatch.delenv(signing.SIGNING_KEY_ENV)
  monkeypatch.delenv(signing.PUBLIC_KEY_ENV)
  monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path / 'config'))
  with pytest.raises(signing.KeyFileError, match='python -m pipelines.keys generate'):
    signing.reader_keys()  # a reader never creates a key
  assert not (tmp_path / 'config').exists()
  made = signing.ensure_key_pair()
  assert signing.signing_key_path() == str(tmp_path / 'config' / 'attack-detection' /
                                           signing.SIGNING_KEY_FILE)
  assert signing.reader_keys() == made.public == signing.SigningKey.load().public
  assert signing.ensure_key_pair() is None
  os.remove(signing.public_key_path())
  assert signing.ensure_key_pair() is None  # the public half written back from the private
  assert signing.reader_keys() == made.public
  os.remove(signing.signing_key_path())
  with pytest.raises(signing.KeyFileError, match='exists but its signing key'):
    signing.ensure_key_pair()


def test_readers_accept_every_key_of_a_rotation_file(own_registry, model_keys, tmp_path):
  new = signing.SigningKey.generate()
  rotation = tmp_path / 'readers.pub'
  rotation.write_bytes(model_keys.public_pem() + new.public_pem())
  keys = signing.reader_keys(str(rotation))
  assert keys.key_ids == (model_keys.key_id, new.key_id)
  old_version = registry.latest_version(own_registry, 'process')
  estimator = registry.load(own_registry, 'process').estimator
  new_version = registry.publish(own_registry, 'process', estimator, feature_columns=[],
                                 training_rows=1, signing_key=new)
  assert registry.load(own_registry, 'process', old_version, public_keys=keys)
  assert registry.load(own_registry, 'process', public_keys=keys).version == new_version
  assert registry.read_manifest(own_registry, 'process', new_version,
                                keys)['signing_key_id'] == new.key_id


@pytest.mark.parametrize('content', [b'', b'not a key', b'-----BEGIN PUBLIC KEY-----\nAAAA\n'
                                     b'-----END PUBLIC KEY-----\n'])
def test_a_public_key_file_without_a_key_is_refused(tmp_path, content):
  path = tmp_path / 'readers.pub'
  path.write_bytes(content)
  with pytest.raises(signing.KeyFileError):
    signing.reader_keys(str(path))


def test_a_public_key_of_another_algorithm_is_refused(tmp_path):
  path = tmp_path / 'readers.pub'
  path.write_bytes(signing.public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
  with pytest.raises(signing.KeyFileError, match='not an Ed25519 key'):
    signing.reader_keys(str(path))


def test_bootstrap_trains_the_detectors_without_a_version_that_verifies(own_registry):
  """What run_local.sh does first; a version that does not verify is as good as none."""
  versions = bootstrap.verified_versions(own_registry)
  assert bootstrap.bootstrap(own_registry) == {}
  os.remove(os.path.join(own_registry, 'memory', versions['memory'], registry.SIGNATURE_FILE))
  assert bootstrap.verified_versions(own_registry)['memory'] is None
  published = bootstrap.bootstrap(own_registry, machines=6, seconds=400)
  assert set(published) == {'memory'}
  assert bootstrap.verified_versions(own_registry) == {**versions, **published}
  assert registry.read_manifest(own_registry, 'memory', published['memory'])['format'] == 'skops'


@pytest.mark.timeout(60)
@pytest.mark.parametrize('name', [registry.MANIFEST_FILE, registry.SIGNATURE_FILE,
                                  registry.MODEL_FILE])
def test_a_named_pipe_in_a_version_never_blocks_a_reader(own_registry, name):
  version = registry.latest_version(own_registry, 'network')
  path = os.path.join(_version_dir(own_registry, 'network', version), name)
  os.remove(path)
  os.mkfifo(path)  # opening it for reading would wait for a writer forever
  with pytest.raises(registry.ModelIntegrityError, match='not a regular file'):
    registry.load(own_registry, 'network', version)
  with pytest.raises(registry.NoModelError, match='not a regular file'):
    registry.load(own_registry, 'network')
