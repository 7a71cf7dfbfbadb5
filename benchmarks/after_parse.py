"""Benchmark (not a test): CPU time per record of the network path after parsing -- enrichment
and record ids, scoring (with the normal profile's reasons, as the job does) and the archive
sink (Arrow chunk, then the Parquet file) -- on real KDD Cup 1999 records, in one process.

    python -m benchmarks.after_parse --model_dir models
    python -m benchmarks.after_parse --model_dir /tmp/gmm --records 50000 --rounds 3

Records are taken in blocks of ``--batch_size`` consecutive lines spread over the whole file,
so each batch has the file's own locality (floods of alike records) and all batches together
its mix. CPU time (``time.process_time``), not wall time: on a shared machine it is the figure
the other jobs change least. Run it from two worktrees to compare two commits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import numpy as np
from apache_beam.utils.timestamp import Timestamp

from benchmarks import common
from benchmarks.peer import KDD_FILE
from generator.source import SourceConfig, generate_messages
from model import profile as normal_profile, registry
from schemas.kdd import read_kdd_csv
from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import NETWORK
from transforms.enrich import enrich_batch
from transforms.inference import score_batch
from transforms.parquet_sink import _ArrowChunksFn, _WriteGroupFn  # pylint: disable=protected-access
from transforms.parse import parse_messages
from transforms.source import SourceMessage

STAGES = ('enrich', 'score', 'write')


def kdd_messages(path: str, records: int, batch_size: int) -> list[SourceMessage]:
  """Blocks of consecutive records spread over the file, as the generator sends them (one
  JSON message each), with event times ending now."""
  frame = read_kdd_csv(path)
  blocks = max(1, records // batch_size)
  starts = np.linspace(0, max(0, len(frame) - batch_size), blocks).astype(int)
  frame = frame.iloc[np.concatenate([np.arange(s, s + batch_size) for s in starts])]
  frame = frame.reset_index(drop=True)
  config = SourceConfig(streams=('network',), source='kdd', frame=frame, one_sequential_pass=True,
                        count=len(frame), seed=0, event_rate=1000.0,
                        start_ms=int(time.time() * 1000) - len(frame))
  return [SourceMessage('network', m.value, m.topic, 0, i, m.timestamp_ms)
          for i, m in enumerate(generate_messages(config))]


def one_round(batches: list, loaded, profile, folder: str) -> dict[str, float]:
  """Microseconds of CPU per record of each stage over all ``batches``."""
  seconds = dict.fromkeys(STAGES, 0.0)
  records = 0
  path = os.path.join(folder, 'part.parquet')
  for batch in batches:
    started = time.process_time()
    enriched, _ = enrich_batch(NETWORK, batch, 'bench')
    enriched_at = time.process_time()
    scored = score_batch(NETWORK, loaded, enriched, profile)
    scored_at = time.process_time()
    to_chunks = _ArrowChunksFn(ARCHIVE_SCHEMAS['network'], 'event_time', num_shards=1)
    to_chunks.start_bundle()
    to_chunks.process(scored, timestamp=Timestamp(0))
    _WriteGroupFn._write(path, [w.value[1] for w in to_chunks.finish_bundle()])  # pylint: disable=protected-access
    written_at = time.process_time()
    seconds['enrich'] += enriched_at - started
    seconds['score'] += scored_at - enriched_at
    seconds['write'] += written_at - scored_at
    records += len(batch)
  return {stage: s / records * 1e6 for stage, s in seconds.items()}


def run(args) -> dict[str, Any]:
  common.ensure_models(args.model_dir)
  loaded = registry.load_for_serving(args.model_dir, 'network')
  profile = normal_profile.load_profile(loaded, model_dir=args.model_dir)
  messages = kdd_messages(args.kdd_file, args.records, args.batch_size)
  batches = [parse_messages(NETWORK, messages[i:i + args.batch_size])[0]
             for i in range(0, len(messages), args.batch_size)]
  model = loaded.estimator.pipeline.steps[-1][1] if hasattr(loaded.estimator, 'pipeline') \
      else loaded.estimator
  common.log(f'model {loaded.version} ({type(model).__name__}), profile: '
             f'{profile is not None}; {len(messages):,} records in {len(batches)} batches')
  rounds = []
  with tempfile.TemporaryDirectory(prefix='bench-after-parse-') as folder:
    one_round(batches[:2], loaded, profile, folder)  # warm-up
    for _ in range(args.rounds):
      rounds.append(one_round(batches, loaded, profile, folder))
      print('  '.join(f'{s} {rounds[-1][s]:6.2f}' for s in STAGES),
            f' total {sum(rounds[-1].values()):6.2f} us of CPU a record', flush=True)
  return {'model_version': loaded.version, 'model': type(model).__name__,
          'records': len(messages), 'batch_size': args.batch_size, 'rounds': rounds}


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model_dir', default='models')
  parser.add_argument('--kdd_file', default=KDD_FILE)
  parser.add_argument('--records', type=int, default=50_000)
  parser.add_argument('--batch_size', type=int, default=2_000)
  parser.add_argument('--rounds', type=int, default=2)
  return run(parser.parse_args(argv))


if __name__ == '__main__':
  main()
