"""First models for an empty registry, trained through the real retrain job on synthetic data.

    python -m pipelines.bootstrap --model_dir models       # only detectors without a version

A detector "without a version" has none whose signed manifest verifies against the readers'
public key. On a fresh machine this also creates the model signing key pair in its default
place (model/signing.py) when neither half exists: the first models need a key to be signed
with, and the stream and dashboard find the public half there.

The generator's labelled synthetic traffic is written as an archive (the layout the stream job
writes), then ``pipelines.retrain`` trains, evaluates and publishes from it: the first models
go through exactly the path every later model does. Once the stream has archived real traffic,
retrain on that instead.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
from typing import Optional, Sequence

import pandas as pd
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

from generator.synthetic_host import generate_host
from generator.synthetic_network import generate_network
from model import registry, signing
from model.dataset import archive_table
from pipelines import retrain, storage

log = logging.getLogger(__name__)


def synthetic_frames(seed: int, network_rows: int, machines: int, seconds: int
                     ) -> dict[str, pd.DataFrame]:
  start_ts = 1_700_000_000
  process, memory = generate_host(machines, seconds, seed=seed, start_ts=start_ts)
  return {'network': generate_network(network_rows, seed=seed),
          'process': pd.DataFrame(process), 'memory': pd.DataFrame(memory)}


def verified_versions(model_dir: str, public_key: Optional[str] = None
                      ) -> dict[str, Optional[str]]:
  """{detector: the newest version that verifies against the readers' public key, or None}."""
  keys = signing.reader_keys(public_key)
  return {d: (registry.newest_verified_manifest(model_dir, d, keys) or (None,))[0]
          for d in registry.DETECTORS}


def bootstrap(model_dir: str, *, seed: int = 0, network_rows: int = 60_000, machines: int = 20,
              seconds: int = 600, force: bool = False, signing_key: Optional[str] = None,
              public_key: Optional[str] = None,
              beam_args: Sequence[str] = ()) -> dict[str, str]:
  """Publishes a model for every detector that has no verified one (all with ``force``),
  signed with ``signing_key`` (a path; default: the publisher's default, created with its
  public half ``public_key`` when neither exists). ``beam_args`` go to the retrain job (e.g.
  the S3 flags for an s3:// model dir)."""
  signing.ensure_key_pair(signing_key, public_key)
  verified = verified_versions(model_dir, public_key)
  missing = [d for d in registry.DETECTORS if force or verified[d] is None]
  if not missing:
    log.info('%s already holds a model for every detector', model_dir)
    return {}
  frames = synthetic_frames(seed, network_rows, machines, seconds)
  published = {}
  with tempfile.TemporaryDirectory(prefix='bootstrap-archive-') as archive:
    start = datetime.datetime(2023, 11, 14, tzinfo=datetime.timezone.utc)
    for detector in missing:
      path = os.path.join(archive, detector, 'part-0.parquet')
      os.makedirs(os.path.dirname(path))
      pq.write_table(archive_table(detector, frames[detector], start=start,
                                   uuid_prefix=f'bootstrap-{detector}-'), path)
      log.info('training the %s detector on %d synthetic rows', detector, len(frames[detector]))
      keys = [f'--model_signing_key={signing.signing_key_path(signing_key)}',
              f'--model_public_key={signing.public_key_path(public_key)}']
      retrain.run([f'--detector={detector}', f'--input={path}', f'--model_dir={model_dir}',
                   '--grid=small', f'--seed={seed}', '--force', *keys, *beam_args])
      published[detector] = registry.latest_version(model_dir, detector)
  return published


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m pipelines.bootstrap', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_dir', default='models', help='registry root (default: models)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--force', action='store_true',
                      help='retrain every detector, even those that have a model')
  parser.add_argument('--model_signing_key', default=None,
                      help='private key that signs the models (default: '
                      f'${signing.SIGNING_KEY_ENV}, else ~/.config/attack-detection/'
                      f'{signing.SIGNING_KEY_FILE}; created with its public half if neither '
                      'exists)')
  parser.add_argument('--model_public_key', default=None,
                      help='the readers\' public key file (default: '
                      f'${signing.PUBLIC_KEY_ENV}, else ~/.config/attack-detection/'
                      f'{signing.PUBLIC_KEY_FILE})')
  # Anything else is a Beam option for the retrain job (--runner, the S3 flags, ...).
  args, beam_args = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  # The registry is read before any pipeline exists (an s3:// or gs:// model dir needs this).
  storage.configure(PipelineOptions(beam_args))
  try:
    published = bootstrap(args.model_dir, seed=args.seed, force=args.force,
                          signing_key=args.model_signing_key, public_key=args.model_public_key,
                          beam_args=beam_args)
    verified = verified_versions(args.model_dir, args.model_public_key)
  except signing.KeyFileError as e:
    print(f'pipelines.bootstrap: {e}', file=sys.stderr)
    return 1
  for detector in registry.DETECTORS:
    note = ' (new)' if detector in published else ''
    print(f'{detector:<8} {verified[detector] or "none"}{note}')
  return 0 if all(verified.values()) else 1


if __name__ == '__main__':
  sys.exit(main())
