"""First models for an empty registry, trained through the real retrain job on synthetic data.

    python -m model.bootstrap --model_dir models       # only detectors without a version

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

from model import registry
from model.dataset import archive_table

log = logging.getLogger('model.bootstrap')


def synthetic_frames(seed: int, network_rows: int, machines: int, seconds: int
                     ) -> dict[str, pd.DataFrame]:
  from generator.synthetic_host import generate_host
  from generator.synthetic_network import generate_network
  start_ts = 1_700_000_000
  process, memory = generate_host(machines, seconds, seed=seed, start_ts=start_ts)
  return {'network': generate_network(network_rows, seed=seed),
          'process': pd.DataFrame(process), 'memory': pd.DataFrame(memory)}


def bootstrap(model_dir: str, *, seed: int = 0, network_rows: int = 60_000, machines: int = 20,
              seconds: int = 600, force: bool = False,
              beam_args: Sequence[str] = ()) -> dict[str, str]:
  """Publishes a model for every detector that has none (all with ``force``). ``beam_args``
  go to the retrain job (e.g. the S3 flags for an s3:// model dir)."""
  from pipelines import retrain
  missing = [d for d in registry.DETECTORS
             if force or registry.latest_version(model_dir, d) is None]
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
      retrain.run([f'--detector={detector}', f'--input={path}', f'--model_dir={model_dir}',
                   '--grid=small', f'--seed={seed}', '--force', *beam_args])
      published[detector] = registry.latest_version(model_dir, detector)
  return published


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m model.bootstrap', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_dir', default='models', help='registry root (default: models)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--force', action='store_true',
                      help='retrain every detector, even those that have a model')
  # Anything else is a Beam option for the retrain job (--runner, the S3 flags, ...).
  args, beam_args = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  from apache_beam.options.pipeline_options import PipelineOptions
  from pipelines import storage
  # The registry is read before any pipeline exists (an s3:// or gs:// model dir needs this).
  storage.configure(PipelineOptions(beam_args))
  published = bootstrap(args.model_dir, seed=args.seed, force=args.force, beam_args=beam_args)
  for detector in registry.DETECTORS:
    version = registry.latest_version(args.model_dir, detector)
    note = ' (new)' if detector in published else ''
    print(f'{detector:<8} {version or "none"}{note}')
  return 0 if all(registry.latest_version(args.model_dir, d) for d in registry.DETECTORS) else 1


if __name__ == '__main__':
  sys.exit(main())
