"""The model registry: ``<model_dir>/<detector>/<version>/{model.joblib, manifest.json}``.

Versions are UTC timestamps (``20261123T200102123456Z``), so sorting names sorts by time.
Publishing writes the model file first and the manifest last, through a temporary name and a
rename: a version without ``manifest.json`` is invisible to readers, so nobody ever loads a
half-written model, on a local disk or on an object store where only single objects are atomic.
Loading recomputes the model file's sha256 and refuses a file that does not match.

All I/O goes through Beam's ``FileSystems``, so ``s3://`` and ``gs://`` model dirs work too.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import platform
from typing import Any, NamedTuple, Optional

import joblib
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from model.serving import compile_for_serving

DETECTORS = ('network', 'process', 'memory')
MODEL_FILE = 'model.joblib'
MANIFEST_FILE = 'manifest.json'
_VERSION_FORMAT = '%Y%m%dT%H%M%S%fZ'

log = logging.getLogger(__name__)


class ModelIntegrityError(RuntimeError):
  """A model file does not match its manifest: it was altered or half-copied."""


class NoModelError(LookupError):
  """The registry holds no published version for a detector."""


class LoadedModel(NamedTuple):
  version: str
  estimator: Any
  manifest: dict[str, Any]


def new_version(now: Optional[datetime.datetime] = None) -> str:
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return now.strftime(_VERSION_FORMAT)


def _detector_dir(model_dir: str, detector: str) -> str:
  if detector not in DETECTORS:
    raise ValueError(f'unknown detector {detector!r}; expected one of {DETECTORS}')
  return FileSystems.join(model_dir, detector)


def list_versions(model_dir: str, detector: str) -> list[str]:
  """Published versions (those with a manifest), oldest first."""
  pattern = FileSystems.join(_detector_dir(model_dir, detector), '*', MANIFEST_FILE)
  try:
    matched = FileSystems.match([pattern])[0].metadata_list
  except BeamIOError:
    return []
  versions = {m.path.replace('\\', '/').rstrip('/').split('/')[-2] for m in matched}
  return sorted(v for v in versions if not v.startswith('.'))


def latest_version(model_dir: str, detector: str) -> Optional[str]:
  versions = list_versions(model_dir, detector)
  return versions[-1] if versions else None


def _read(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def read_manifest(model_dir: str, detector: str, version: str) -> dict[str, Any]:
  path = FileSystems.join(_detector_dir(model_dir, detector), version, MANIFEST_FILE)
  return json.loads(_read(path))


def load(model_dir: str, detector: str, version: Optional[str] = None) -> LoadedModel:
  """Loads a version (default: the newest), verifying the model file's sha256."""
  version = version or latest_version(model_dir, detector)
  if version is None:
    raise NoModelError(
        f'no published {detector} model under {model_dir}: train one with '
        f'`python -m pipelines.retrain --detector {detector} --model_dir {model_dir} ...`')
  manifest = read_manifest(model_dir, detector, version)
  model_path = FileSystems.join(_detector_dir(model_dir, detector), version,
                                manifest['model_file'])
  data = _read(model_path)
  digest = hashlib.sha256(data).hexdigest()
  if digest != manifest['sha256']:
    raise ModelIntegrityError(
        f'refusing to load {model_path}: its sha256 is {digest} but the manifest says '
        f"{manifest['sha256']}. The file was modified or partly copied; republish the "
        f'model or delete this version.')
  # joblib unpickles arbitrary code: only after the checksum proves it is the published file.
  return LoadedModel(version, joblib.load(io.BytesIO(data)), manifest)


def load_for_serving(model_dir: str, detector: str, version: Optional[str] = None
                     ) -> LoadedModel:
  """:func:`load`, then the model compiled for scoring in this process (model/serving.py)."""
  loaded = load(model_dir, detector, version)
  return loaded._replace(estimator=compile_for_serving(loaded.estimator))


def library_versions() -> dict[str, str]:
  import apache_beam
  import numpy
  import pandas
  import sklearn
  return {'python': platform.python_version(), 'scikit-learn': sklearn.__version__,
          'numpy': numpy.__version__, 'pandas': pandas.__version__,
          'apache-beam': apache_beam.__version__}


def publish(model_dir: str, detector: str, estimator: Any, *,
            feature_columns: list[str], training_rows: int,
            training_time_range: tuple[Optional[str], Optional[str]] = (None, None),
            parameters: Optional[dict[str, Any]] = None,
            metrics: Optional[dict[str, Any]] = None,
            version: Optional[str] = None) -> str:
  """Publishes ``estimator`` as a new version and returns the version name."""
  version = version or new_version()
  version_dir = FileSystems.join(_detector_dir(model_dir, detector), version)
  buffer = io.BytesIO()
  joblib.dump(estimator, buffer, compress=3)
  data = buffer.getvalue()
  manifest = {
      'detector': detector,
      'version': version,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'model_file': MODEL_FILE,
      'sha256': hashlib.sha256(data).hexdigest(),
      'size_bytes': len(data),
      'training_rows': training_rows,
      'training_time_range': list(training_time_range),
      'parameters': parameters or {},
      'metrics': metrics or {},
      'feature_columns': list(feature_columns),
      'threshold': getattr(estimator, 'threshold', None),
      'library_versions': library_versions(),
  }
  if not FileSystems.exists(version_dir):
    FileSystems.mkdirs(version_dir)
  _write(FileSystems.join(version_dir, MODEL_FILE), data)
  staging = FileSystems.join(version_dir, '.' + MANIFEST_FILE + '.tmp')
  _write(staging, json.dumps(manifest, indent=2, sort_keys=True).encode('utf-8'))
  FileSystems.rename([staging], [FileSystems.join(version_dir, MANIFEST_FILE)])
  log.info('published %s model %s (%d training rows)', detector, version, training_rows)
  return version
