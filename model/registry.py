"""The model registry: ``<model_dir>/<detector>/<version>/{model.skops, manifest.json,
manifest.sig}``.

Whoever can write into the registry must not be able to choose what the stream serves or run
code on its workers (docs/model-registry.md):

* Versions are UTC timestamps in this module's format (``20261123T200102123456Z``) and sort by
  the time they name. Any other folder name is not a version: logged once, ignored.
* A version's files stay inside its folder: the manifest names its model file by a plain file
  name (no separators, no ``..``).
* The manifest carries the model file's sha256 and is signed with the publisher's Ed25519 key
  (model/signing.py). Readers verify the signature with their public keys, then the sha256,
  before anything is deserialised; the manifest must also name the detector and the version of
  the folder it sits in, so a signed manifest cannot be replayed under another name.
* Models are stored with skops (``format: skops``), which builds objects only of the types on
  :data:`TRUSTED_TYPES` (plus the scikit-learn and numpy types skops trusts itself) and refuses
  anything else, instead of unpickling whatever the file asks for. A model skops cannot hold is
  published as a joblib pickle (``format: joblib``), loaded only behind a verified signature.

Publishing writes the model file and the signature first and the manifest last, through a
temporary name and a rename: a version without ``manifest.json`` is invisible to readers, so
nobody ever loads a half-written model, on a local disk or on an object store where only single
objects are atomic.

All I/O goes through Beam's ``FileSystems``, so ``s3://`` and ``gs://`` model dirs work too.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import os
import platform
import re
import stat
import threading
import zipfile
from typing import Any, Callable, NamedTuple, Optional

import joblib
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from model import signing
from model.serving import SERVING_FILES, compile_for_serving, serving_files

DETECTORS = ('network', 'process', 'memory')
MANIFEST_FILE = 'manifest.json'
SIGNATURE_FILE = 'manifest.sig'
FORMATS = {'skops': 'model.skops', 'joblib': 'model.joblib'}
MODEL_FILE = FORMATS['skops']
_VERSION_FORMAT = '%Y%m%dT%H%M%S%fZ'
_VERSION_PATTERN = re.compile(r'[0-9]{8}T[0-9]{12}Z')
_FILE_NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,127}')
_SHA256_PATTERN = re.compile(r'[0-9a-f]{64}')
# A manifest is a few kilobytes (metrics, parameters, the normal profile).
MAX_MANIFEST_BYTES = 1 << 20

# The types a model file may build beyond those skops trusts by default (scikit-learn's
# estimators and transformers, numpy arrays, builtins): this project's detector classes and
# feature functions, and the fitted trees inside scikit-learn's forests and boosting.
TRUSTED_TYPES = (
    'model.detector.ScoredDetector',
    'model.methods.SyntheticContrastForest',
    'model.methods.DensityMixture',
    'model.features.as_categories',
    'model.features.signed_log1p',
    'numpy.dtype',
    'sklearn.tree._tree.Tree',
    'sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor',
)

log = logging.getLogger(__name__)


class ModelIntegrityError(RuntimeError):
  """A version is not what a trusted publisher published: unsigned, wrongly signed, altered,
  half-copied, or naming files outside its folder. Never deserialised."""


class ModelSignatureError(ModelIntegrityError):
  """A manifest without a valid signature by one of the reader's public keys."""


class RegistryReadError(OSError):
  """The registry could not be read (an object store's hiccup, a permission): no verdict on
  the version, which a reader tries again later."""


class _MissingFile(ModelIntegrityError):
  pass


class NoModelError(LookupError):
  """The registry holds no version of a detector that loads and verifies. ``refused``:
  {version: the error that refused it}, oldest first, of the versions that were tried."""

  def __init__(self, message: str, refused: Optional[dict[str, Exception]] = None):
    super().__init__(message)
    self.refused = dict(refused or {})


class LoadedModel(NamedTuple):
  version: str
  estimator: Any
  manifest: dict[str, Any]


def new_version(now: Optional[datetime.datetime] = None) -> str:
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return now.astimezone(datetime.timezone.utc).strftime(_VERSION_FORMAT)


def version_time(name: str) -> Optional[datetime.datetime]:
  """The UTC time a version name stands for; None when ``name`` is not a version."""
  if not isinstance(name, str) or not _VERSION_PATTERN.fullmatch(name):
    return None
  try:
    return datetime.datetime.strptime(name, _VERSION_FORMAT).replace(
        tzinfo=datetime.timezone.utc)
  except ValueError:  # 20261399T..., shaped right but no date
    return None


def is_version(name: str) -> bool:
  return version_time(name) is not None


def _check_version(version: str) -> str:
  if not is_version(version):
    raise ModelIntegrityError(
        f'{str(version)[:80]!r} is not a model version: versions are UTC timestamps like '
        f'{new_version()}')
  return version


def _detector_dir(model_dir: str, detector: str) -> str:
  if detector not in DETECTORS:
    raise ValueError(f'unknown detector {detector!r}; expected one of {DETECTORS}')
  return FileSystems.join(model_dir, detector)


def _version_dir(model_dir: str, detector: str, version: str) -> str:
  return FileSystems.join(_detector_dir(model_dir, detector), _check_version(version))


_ignored_lock = threading.Lock()
_ignored: set[tuple[str, str, str]] = set()
# Names already logged, remembered up to this many: a registry stuffed with junk folders must
# not grow a reader's memory without bound (past it, one line says logging stops).
_MAX_IGNORED = 10_000


def _ignore_once(model_dir: str, detector: str, name: str) -> None:
  key = (model_dir, detector, name)
  with _ignored_lock:
    if key in _ignored or len(_ignored) > _MAX_IGNORED:
      return
    _ignored.add(key)
    if len(_ignored) > _MAX_IGNORED:
      log.warning('more than %d folders under %s are not versions; no longer naming them',
                  _MAX_IGNORED, model_dir)
      return
  log.warning('ignoring %r under %s: not a model version (versions are UTC timestamps like %s)',
              name[:200], _detector_dir(model_dir, detector), new_version())


def list_versions(model_dir: str, detector: str) -> list[str]:
  """Published versions (valid names with a manifest), oldest first by the time they name."""
  pattern = FileSystems.join(_detector_dir(model_dir, detector), '*', MANIFEST_FILE)
  try:
    matched = FileSystems.match([pattern])[0].metadata_list
  except BeamIOError:
    return []
  names = {m.path.replace('\\', '/').rstrip('/').split('/')[-2] for m in matched}
  versions = []
  for name in names:
    if is_version(name):
      versions.append(name)
    elif not name.startswith('.'):  # .candidates and other publisher scratch: not versions
      _ignore_once(model_dir, detector, name)
  return sorted(versions, key=version_time)


def latest_version(model_dir: str, detector: str) -> Optional[str]:
  """The newest published version, verified or not (see :func:`load` for what is served)."""
  versions = list_versions(model_dir, detector)
  return versions[-1] if versions else None


def _read(path: str, limit: Optional[int] = None, refuse_larger: bool = True) -> bytes:
  """A file's bytes, at most ``limit`` (a larger file is refused, or with ``refuse_larger``
  False cut at ``limit + 1`` bytes). A missing or non-regular file is a ModelIntegrityError (a
  named pipe would block the reader forever); other I/O errors are RegistryReadError."""
  try:
    if FileSystems.get_scheme(path) is None:
      mode = os.stat(path).st_mode
      if not stat.S_ISREG(mode):
        raise ModelIntegrityError(f'refusing {path}: not a regular file')
    with FileSystems.open(path, compression_type='uncompressed') as f:
      data = f.read() if limit is None else f.read(limit + 1)
  except FileNotFoundError:
    raise _MissingFile(f'{path} does not exist') from None
  except (BeamIOError, OSError) as e:
    if FileSystems.get_scheme(path) is not None and not FileSystems.exists(path):
      raise _MissingFile(f'{path} does not exist') from None
    raise RegistryReadError(f'cannot read {path}: {e}') from None
  if limit is not None and len(data) > limit and refuse_larger:
    raise ModelIntegrityError(f'refusing {path}: larger than {limit} bytes')
  return data


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path, compression_type='uncompressed') as f:
    f.write(data)


def _read_optional(path: str, limit: int) -> Optional[bytes]:
  """:func:`_read`, or None when the file does not exist."""
  try:
    return _read(path, limit)
  except _MissingFile:
    return None


def _public_keys(public_keys: Optional[signing.PublicKeys]) -> signing.PublicKeys:
  return public_keys if public_keys is not None else signing.reader_keys()


def read_manifest(model_dir: str, detector: str, version: str,
                  public_keys: Optional[signing.PublicKeys] = None) -> dict[str, Any]:
  """A version's manifest, after its signature and its contents check out.

  Raises ModelSignatureError (unsigned, or not signed by ``public_keys``; default: the
  reader's key file, see model/signing.py) or ModelIntegrityError (a manifest that names
  another folder, or a model file outside its own).
  """
  keys = _public_keys(public_keys)
  folder = _version_dir(model_dir, detector, version)
  path = FileSystems.join(folder, MANIFEST_FILE)
  data = _read(path, MAX_MANIFEST_BYTES)
  document = _read_optional(FileSystems.join(folder, SIGNATURE_FILE),
                            signing.MAX_SIGNATURE_BYTES)
  try:
    keys.verify(data, document)
  except signing.SignatureError as e:
    raise ModelSignatureError(
        f'refusing {detector} model {version} ({folder}): {e}. Only versions published by '
        'the retrain job with the signing key whose public half the readers hold are served; '
        'see docs/model-registry.md') from None
  # Signed by a trusted publisher; still, a manifest must describe the folder it sits in.
  try:
    manifest = json.loads(data)
  except ValueError as e:
    raise ModelIntegrityError(f'{path} is not JSON: {e}') from None
  if not isinstance(manifest, dict):
    raise ModelIntegrityError(f'{path} is not a JSON object')
  if manifest.get('detector') != detector or manifest.get('version') != version:
    raise ModelIntegrityError(
        f'refusing {path}: it was signed for {str(manifest.get("detector"))[:20]!r} version '
        f'{str(manifest.get("version"))[:40]!r}, not {detector} {version} (a manifest copied '
        'or renamed)')
  model_file, model_format = manifest.get('model_file'), manifest.get('format')
  if (not isinstance(model_file, str) or not _FILE_NAME_PATTERN.fullmatch(model_file)
      or '..' in model_file or model_file in (MANIFEST_FILE, SIGNATURE_FILE)):
    raise ModelIntegrityError(
        f'refusing {path}: model_file {str(model_file)[:100]!r} is not a plain file name in '
        'its version folder')
  if not isinstance(model_format, str) or model_format not in FORMATS:
    raise ModelIntegrityError(f'refusing {path}: unknown model format {str(model_format)[:40]!r}')
  if not (isinstance(manifest.get('sha256'), str) and _SHA256_PATTERN.fullmatch(manifest['sha256'])
          and isinstance(manifest.get('size_bytes'), int) and manifest['size_bytes'] >= 0):
    raise ModelIntegrityError(f'refusing {path}: no valid sha256 and size_bytes')
  return manifest


def _check_file_name(name: Any) -> str:
  if (not isinstance(name, str) or not _FILE_NAME_PATTERN.fullmatch(name) or '..' in name
      or name in (MANIFEST_FILE, SIGNATURE_FILE) or name in FORMATS.values()):
    raise ModelIntegrityError(
        f'{str(name)[:100]!r} is not a plain file name for a version folder')
  return name


def read_version_file(model_dir: str, detector: str, version: str, name: str,
                      manifest: dict[str, Any]) -> Optional[bytes]:
  """A file the (already verified) ``manifest`` lists in its ``files``, after its size and
  sha256 check out; None when the manifest lists no such file (a version published before
  it existed). ModelIntegrityError when the file is missing, larger or altered."""
  entry = (manifest.get('files') or {}).get(_check_file_name(name))
  if entry is None:
    return None
  if not (isinstance(entry, dict) and isinstance(entry.get('sha256'), str)
          and _SHA256_PATTERN.fullmatch(entry['sha256'])
          and isinstance(entry.get('size_bytes'), int) and entry['size_bytes'] >= 0):
    raise ModelIntegrityError(f'refusing {name} of {detector} {version}: no valid sha256 and '
                              'size_bytes in its manifest')
  path = FileSystems.join(_version_dir(model_dir, detector, version), name)
  data = _read(path, entry['size_bytes'], refuse_larger=False)
  digest = hashlib.sha256(data).hexdigest()
  if digest != entry['sha256']:
    raise ModelIntegrityError(
        f'refusing {path}: its sha256 is {digest} but the signed manifest says '
        f"{entry['sha256']} (the file was modified or partly copied)")
  return data


def _skops_io():
  """skops.io, imported on first use: importing it walks scikit-learn's estimators, a cost the
  stream job's own process (which builds the pipeline and never reads a model) need not pay at
  its start. SDK workers have it preloaded (pipelines/fork_server.py)."""
  import skops.io  # pylint: disable=import-outside-toplevel
  return skops.io


def dumps_model(estimator: Any) -> tuple[bytes, str]:
  """``(bytes, format)``: skops when every type in it is trusted, else a joblib pickle."""
  try:
    skops_io = _skops_io()
    data = skops_io.dumps(estimator, compression=zipfile.ZIP_DEFLATED, compresslevel=6)
    untrusted = set(skops_io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES)
  except Exception as e:  # pylint: disable=broad-except
    untrusted = {f'({type(e).__name__}: {e})'}
  if not untrusted:
    return data, 'skops'
  log.warning('skops cannot hold this %s model safely (types not on the trusted list: %s); '
              'storing it as a joblib pickle, which readers load only behind a verified '
              'signature', type(estimator).__name__, ', '.join(sorted(untrusted)))
  buffer = io.BytesIO()
  joblib.dump(estimator, buffer, compress=3)
  return buffer.getvalue(), 'joblib'


def loads_model(data: bytes, model_format: str, *, allow_pickle: bool) -> Any:
  """A model from its bytes. skops builds trusted types only and refuses the rest; a joblib
  pickle can run any code, so it is loaded only with ``allow_pickle`` (a verified signature)."""
  if model_format == 'skops':
    skops_io = _skops_io()
    try:
      untrusted = set(skops_io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES)
    except Exception as e:  # pylint: disable=broad-except
      raise ModelIntegrityError(f'not a skops model file: {type(e).__name__}: {e}') from None
    if untrusted:
      raise ModelIntegrityError(
          'refusing a model that asks for types not on the trusted list: '
          + ', '.join(sorted(untrusted))[:500])
    return skops_io.loads(data, trusted=list(TRUSTED_TYPES))
  if model_format == 'joblib':
    if not allow_pickle:
      raise ModelIntegrityError('refusing a joblib pickle that no verified signature covers')
    return joblib.load(io.BytesIO(data))
  raise ModelIntegrityError(f'unknown model format {model_format!r}')


def load_version(model_dir: str, detector: str, version: str,
                 public_keys: Optional[signing.PublicKeys] = None) -> LoadedModel:
  """One version: signature, manifest, the model file's size and sha256, then the model."""
  manifest = read_manifest(model_dir, detector, version, public_keys)
  model_path = FileSystems.join(_version_dir(model_dir, detector, version),
                                manifest['model_file'])
  # At most one byte more than the manifest says: a longer file is refused unread.
  data = _read(model_path, manifest['size_bytes'], refuse_larger=False)
  digest = hashlib.sha256(data).hexdigest()
  if digest != manifest['sha256']:
    size = (f'{len(data)} bytes' if len(data) <= manifest['size_bytes']
            else f'more than {manifest["size_bytes"]} bytes')
    raise ModelIntegrityError(
        f'refusing to load {model_path}: its sha256 is {digest} but the manifest says '
        f"{manifest['sha256']} ({size} read, the manifest says {manifest['size_bytes']}). The "
        'file was modified or partly copied; republish the model or delete this version.')
  estimator = loads_model(data, manifest['format'], allow_pickle=True)
  return LoadedModel(version, estimator, manifest)


def no_model_error(model_dir: str, detector: str, keys: Optional[signing.PublicKeys],
                   refused: dict[str, Exception]) -> NoModelError:
  """What a reader raises when no version of ``detector`` loads and verifies: why, and what
  to do. ``refused``: {version: reason} of the versions tried."""
  if not refused:
    return NoModelError(
        f'no published {detector} model under {model_dir}: train one with '
        f'`python -m pipelines.retrain --detector {detector} --model_dir {model_dir} ...` '
        f'(or `python -m pipelines.bootstrap --model_dir {model_dir}` for first models)')
  newest = sorted(refused, key=version_time)[-3:]
  reasons = '; '.join(f'{v}: {type(refused[v]).__name__}: {refused[v]}' for v in newest)
  trusted = keys.describe() if keys is not None else 'the reader\'s public keys'
  return NoModelError(
      f'none of the {len(refused)} {detector} versions under {model_dir} loads and verifies '
      f'against {trusted} ({reasons}). Publish a model signed by the matching key with '
      f'`python -m pipelines.retrain --detector {detector} --model_dir {model_dir} ...` '
      f'(`python -m pipelines.bootstrap --model_dir {model_dir} --force` retrains all), or pass '
      'the public key of the key that signed these with --model_public_key; see '
      'docs/model-registry.md', refused)


def load_newest(model_dir: str, detector: str, public_keys: Optional[signing.PublicKeys],
                *, newer_than: Optional[str] = None, skip: frozenset = frozenset(),
                on_refused: Optional[Callable[[str, Exception], None]] = None,
                loader: Callable[..., LoadedModel] = load_version) -> Optional[LoadedModel]:
  """The newest version that loads and verifies, trying newest first; None if none does.

  Versions in ``skip`` or not newer than ``newer_than`` are not tried. Each version that fails
  goes to ``on_refused(version, error)`` (default: a warning) and the next older one is tried,
  so a broken or unsigned newest version never hides the good one before it.
  """
  keys = _public_keys(public_keys)
  floor = version_time(newer_than) if newer_than else None
  for version in reversed(list_versions(model_dir, detector)):
    if floor is not None and version_time(version) <= floor:
      break
    if version in skip:
      continue
    try:
      return loader(model_dir, detector, version, keys)
    except Exception as e:  # pylint: disable=broad-except
      if on_refused is not None:
        on_refused(version, e)
      else:
        log.warning('skipping %s model %s: %s', detector, version, e)
  return None


def load(model_dir: str, detector: str, version: Optional[str] = None,
         public_keys: Optional[signing.PublicKeys] = None) -> LoadedModel:
  """A verified version; by default the newest that loads and verifies (NoModelError, saying
  what to do, when none does)."""
  if version is not None:
    return load_version(model_dir, detector, version, public_keys)
  keys = _public_keys(public_keys)
  refused: dict[str, Exception] = {}

  def note(version, error):
    refused[version] = error
    log.warning('skipping %s model %s: %s', detector, version, error)
  loaded = load_newest(model_dir, detector, keys, on_refused=note)
  if loaded is None:
    raise no_model_error(model_dir, detector, keys, refused)
  return loaded


def load_version_for_serving(model_dir: str, detector: str, version: str,
                             public_keys: Optional[signing.PublicKeys] = None) -> LoadedModel:
  return _compiled(model_dir, detector, load_version(model_dir, detector, version, public_keys))


def load_for_serving(model_dir: str, detector: str, version: Optional[str] = None,
                     public_keys: Optional[signing.PublicKeys] = None) -> LoadedModel:
  """:func:`load`, then the model compiled for scoring in this process (model/serving.py),
  with the compiled forms its version was published with."""
  return _compiled(model_dir, detector, load(model_dir, detector, version, public_keys))


def _compiled(model_dir: str, detector: str, loaded: LoadedModel) -> LoadedModel:
  files = {name: read_version_file(model_dir, detector, loaded.version, name, loaded.manifest)
           for name in SERVING_FILES}
  return loaded._replace(estimator=compile_for_serving(
      loaded.estimator, {name: data for name, data in files.items() if data is not None}))


def newest_verified_manifest(model_dir: str, detector: str,
                             public_keys: Optional[signing.PublicKeys] = None
                             ) -> Optional[tuple[str, dict[str, Any]]]:
  """``(version, manifest)`` of the newest version whose signed manifest verifies, without
  reading its model (the dashboard, bootstrap); None when none does."""
  keys = _public_keys(public_keys)
  for version in reversed(list_versions(model_dir, detector)):
    try:
      return version, read_manifest(model_dir, detector, version, keys)
    except ModelIntegrityError as e:
      log.debug('skipping %s model %s: %s', detector, version, e)
  return None


def library_versions() -> dict[str, str]:
  import apache_beam
  import numpy
  import pandas
  import skops
  import sklearn
  return {'python': platform.python_version(), 'scikit-learn': sklearn.__version__,
          'numpy': numpy.__version__, 'pandas': pandas.__version__,
          'apache-beam': apache_beam.__version__, 'skops': skops.__version__}


def publish(model_dir: str, detector: str, estimator: Any, *,
            feature_columns: list[str], training_rows: int,
            signing_key: Optional[signing.SigningKey] = None,
            training_time_range: tuple[Optional[str], Optional[str]] = (None, None),
            parameters: Optional[dict[str, Any]] = None,
            metrics: Optional[dict[str, Any]] = None,
            version: Optional[str] = None,
            extra_files: Optional[dict[str, bytes]] = None) -> str:
  """Publishes ``estimator`` as a new version, its manifest signed with ``signing_key``
  (default: the publisher's key file, see model/signing.py); returns the version name.

  ``extra_files`` ({plain file name: bytes}, e.g. the normal profile) are written into the
  version folder and listed with their sha256 in the manifest's ``files``, so the signature
  covers them too (read back with :func:`read_version_file`); so are the model's compiled
  forms (``model.serving.serving_files``: the forest's ONNX graph), which readers serve."""
  key = signing_key if signing_key is not None else signing.SigningKey.load()
  version = _check_version(version or new_version())
  version_dir = _version_dir(model_dir, detector, version)
  data, model_format = dumps_model(estimator)
  extra_files = {**serving_files(estimator), **(extra_files or {})}
  for name in extra_files:
    _check_file_name(name)
  manifest = {
      'detector': detector,
      'version': version,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'format': model_format,
      'model_file': FORMATS[model_format],
      'sha256': hashlib.sha256(data).hexdigest(),
      'size_bytes': len(data),
      'signing_key_id': key.key_id,
      'training_rows': training_rows,
      'training_time_range': list(training_time_range),
      'parameters': parameters or {},
      'metrics': metrics or {},
      'feature_columns': list(feature_columns),
      'threshold': getattr(estimator, 'threshold', None),
      'library_versions': library_versions(),
      'files': {name: {'sha256': hashlib.sha256(content).hexdigest(), 'size_bytes': len(content)}
                for name, content in sorted(extra_files.items())},
  }
  manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode('utf-8')
  if not FileSystems.exists(version_dir):
    FileSystems.mkdirs(version_dir)
  _write(FileSystems.join(version_dir, FORMATS[model_format]), data)
  for name, content in extra_files.items():
    _write(FileSystems.join(version_dir, name), content)
  _write(FileSystems.join(version_dir, SIGNATURE_FILE), key.sign(manifest_bytes))
  staging = FileSystems.join(version_dir, '.' + MANIFEST_FILE + '.tmp')
  _write(staging, manifest_bytes)
  FileSystems.rename([staging], [FileSystems.join(version_dir, MANIFEST_FILE)])
  log.info('published %s model %s (%s, signed by key %s; %d training rows)', detector, version,
           model_format, key.key_id, training_rows)
  return version
