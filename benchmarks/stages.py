"""Benchmark (not a test): what each stage of the stream costs per record, and how the batch
size (records per model call) changes it. In one process, on one core, no runner: the same
functions the job's DoFns call, timed on generated traffic.

    python -m benchmarks.stages                          # 20,000 network + host records
    python -m benchmarks.stages --records 5000 --batch_size 1 --batch_size 100 --batch_size 1000
    python -m benchmarks.stages --kdd_file ../shared/data/kddcup.data_10_percent.gz \
        --records 100000 --batch_size 2000 --only parse       # parsing real records alone
    python -m benchmarks.stages --kdd_file ../shared/data/kddcup.data_10_percent.gz \
        --spread --records 50000 --batch_size 2000           # the whole file's mix

Stages: ``parse`` (JSON decoding and cleaning, ParseAndClean), ``enrich`` (event time, uuid,
site), ``inference`` (the registry's model on one batch, RunInference's call), ``reasons``
(the normal profile's reasons of the batch's flagged records, which the alerts carry), ``join``
(pairing flagged process and memory records in a window, JoinHostAttacks' per-window work),
``write`` (the archive sink: Arrow conversion, the shuffle's IPC chunk, Parquet). The runner's
own cost (Fn API transfer, shuffles, Kafka) is what ``benchmarks.throughput`` adds on top.
Times are CPU time of the process (``time.process_time``), which a machine busy with other
work changes far less than wall time. ``--kdd_file`` takes the network records from a KDD Cup
CSV file, in file order, as the generator sends them; with ``--spread``, in blocks of 2,000
consecutive lines spread over the whole file instead of its first lines (the file's mix, each
batch with the file's own locality: floods of alike records). ``--only parse`` times parsing
alone (no model, no join). Prints a table, writes ``stages.json`` and ``stages.png`` under
``--results_dir``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Optional

import numpy as np
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp

from benchmarks import common, report
from generator.source import SourceConfig, generate_messages
from model import profile as normal_profile, registry
from schemas.kdd import read_kdd_csv
from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import HOST_STREAMS, SCHEMAS, STREAMS
from transforms.detect import predicted_attacks
from transforms.enrich import enrich_batch, join_key
from transforms.inference import model_scores, with_reasons
from transforms.join import JOIN_GAP_S, pairs_in_window
from transforms.parquet_sink import _ArrowChunksFn, _WriteGroupFn  # pylint: disable=protected-access
from transforms.parse import parse_messages
from transforms.source import SourceMessage

DEFAULT_BATCH_SIZES = (10, 100, 500, 1000, 2000, 5000)  # 1 takes minutes: a model call each
SPREAD_BLOCK = 2_000  # consecutive KDD lines per block with --spread: the job's batch size


def source_messages(stream: str, records: int, seed: int,
                    kdd_file: Optional[str] = None, spread: bool = False) -> list:
  """Generated messages of one stream holding about ``records`` records (network records of
  ``kdd_file`` in file order, when given; ``spread``: blocks spread over the file)."""
  is_array = SCHEMAS[stream].is_array
  messages, count = [], 0
  # Event times an hour back: the job's event-time bounds (schemas/limits.py) refuse older.
  start_ms = int(time.time() * 1000) - 3_600_000
  config = SourceConfig(streams=(stream,), seed=seed, start_ms=start_ms)
  if kdd_file and stream == 'network':
    config = SourceConfig(streams=(stream,), seed=seed, start_ms=start_ms, source='kdd',
                          kdd_file=kdd_file, one_sequential_pass=True, count=records)
    if spread:
      config = SourceConfig(streams=(stream,), seed=seed, start_ms=start_ms, source='kdd',
                            frame=spread_blocks(kdd_file, records), one_sequential_pass=True,
                            count=records)
  for m in generate_messages(config):
    messages.append(SourceMessage(stream, m.value, m.topic, 0, len(messages), m.timestamp_ms))
    count += m.value.count(b'"CMD"') if is_array else max(1, len(m.uuids))
    if count >= records:
      return messages
  return messages


def spread_blocks(kdd_file: str, records: int):
  """About ``records`` lines of ``kdd_file`` as blocks of SPREAD_BLOCK consecutive lines
  spread evenly over the file."""
  frame = read_kdd_csv(kdd_file)
  block = min(SPREAD_BLOCK, len(frame))
  starts = np.linspace(0, len(frame) - block, max(1, records // block)).astype(int)
  rows = np.concatenate([np.arange(start, start + block) for start in starts])
  return frame.iloc[rows].reset_index(drop=True)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
  started = time.process_time()
  result = fn()
  return time.process_time() - started, result


def stage_costs(stream: str, messages: list, model_dir: str, batch_size: int,
                only: Optional[str] = None) -> dict[str, Any]:
  """CPU seconds per stage over all ``messages``, in batches of ``batch_size`` records;
  ``only='parse'``: that stage alone."""
  schema, arrow_schema = SCHEMAS[stream], ARCHIVE_SCHEMAS[stream]
  loaded = None if only else registry.load_for_serving(model_dir, stream)
  profile = None if only else normal_profile.load_profile(loaded, model_dir=model_dir)
  seconds = collections.Counter()
  records = 0
  scored_batches = []
  # Host messages hold several records each: batch by messages so batches hold ~batch_size.
  per_message = max(1, round(sum(m.value.count(b'"CMD"') for m in messages[:50]) / 50)
                    ) if schema.is_array else 1
  step = max(1, batch_size // per_message)
  folder = tempfile.mkdtemp(prefix='bench-stages-')
  path = os.path.join(folder, 'part.parquet')
  for begin in range(0, len(messages), step):
    chunk = messages[begin:begin + step]
    elapsed, (batch, _) = _timed(lambda: parse_messages(schema, chunk))
    seconds['parse'] += elapsed
    if only:
      records += len(batch)
      continue
    elapsed, (batch, _) = _timed(lambda: enrich_batch(schema, batch, 'bench'))
    seconds['enrich'] += elapsed
    elapsed, batch = _timed(lambda: model_scores(schema, loaded, batch))
    seconds['inference'] += elapsed
    if profile is not None:
      elapsed, batch = _timed(lambda: with_reasons(schema, profile, batch))
      seconds['reasons'] += elapsed
    elapsed, _ = _timed(lambda: _write(batch, arrow_schema, path))
    seconds['write'] += elapsed
    records += len(batch)
    scored_batches.append(batch)
  shutil.rmtree(folder)
  return {'records': records, 'seconds': dict(seconds), 'batches': scored_batches}


def _write(batch, arrow_schema, path: str) -> None:
  """The archive sink's own code for one batch: its Arrow chunk for the shuffle (one bundle),
  then the Parquet file written from it to ``path``."""
  to_chunks = _ArrowChunksFn('archive', arrow_schema, 'event_time', num_shards=1)
  to_chunks.start_bundle()
  to_chunks.process(batch, timestamp=Timestamp(0))
  for chunk in to_chunks.finish_bundle():
    _, data = chunk.value
    _WriteGroupFn._write(path, [data])  # pylint: disable=protected-access


def join_cost(process_batches: list, memory_batches: list) -> tuple[float, int, int]:
  """Seconds to pair every flagged process and memory record in their windows, as
  JoinHostAttacks' per-window step does; returns (seconds, flagged records, pairs)."""
  grouped = collections.defaultdict(lambda: {stream: [] for stream in HOST_STREAMS})
  flagged = 0
  for stream, batches in zip(HOST_STREAMS, (process_batches, memory_batches)):
    schema = SCHEMAS[stream]
    key_of = join_key(schema)
    for row in itertools.chain.from_iterable(predicted_attacks(b) for b in batches):
      start = int(row[schema.time_field] // JOIN_GAP_S) * JOIN_GAP_S
      for window_start in (start - JOIN_GAP_S, start):  # each record lies in two windows
        grouped[(key_of(row), window_start)][stream].append(row)
      flagged += 1
  started = time.perf_counter()
  pairs = 0
  for (key, window_start), streams in grouped.items():
    window = IntervalWindow(window_start, window_start + 2 * JOIN_GAP_S)
    pairs += sum(1 for _ in pairs_in_window((key, streams), JOIN_GAP_S, window))
  return time.perf_counter() - started, flagged, pairs


def run(records: int, batch_sizes: list[int], model_dir: str, seed: int,
        kdd_file: Optional[str] = None, only: Optional[str] = None,
        spread: bool = False) -> dict[str, Any]:
  if not only:
    common.ensure_models(model_dir)
  messages = {s: source_messages(s, records, seed, kdd_file, spread) for s in STREAMS}
  sweep = []
  for batch_size in batch_sizes:
    row = {'batch_size': batch_size}
    for stream in STREAMS:
      costs = stage_costs(stream, messages[stream], model_dir, batch_size, only)
      row[stream] = {'records': costs['records'],
                     'us_per_record': {k: v / costs['records'] * 1e6
                                       for k, v in costs['seconds'].items()}}
      row[stream]['records_per_s'] = costs['records'] / sum(costs['seconds'].values())
      if SCHEMAS[stream].joined:
        row.setdefault('_batches', {})[stream] = costs['batches']
    if only:
      row.pop('_batches', None)
      sweep.append(row)
      print(_parse_table(row), flush=True)
      continue
    seconds, flagged, pairs = join_cost(*(row['_batches'][s] for s in HOST_STREAMS))
    del row['_batches']
    host_records = sum(row[s]['records'] for s in HOST_STREAMS)
    row['join'] = {'flagged_records': flagged, 'pairs': pairs,
                   'us_per_host_record': seconds / host_records * 1e6,
                   'us_per_flagged_record': seconds / max(1, flagged) * 1e6}
    sweep.append(row)
    print(_row_table(row), flush=True)
  table = _parse_table if only else _row_table
  return {'machine': common.machine_info(), 'records_per_stream': records, 'seed': seed,
          'model_dir': model_dir, 'kdd_file': kdd_file, 'spread': spread, 'only': only,
          'sweep': sweep,
          'table': '\n'.join(table(row) for row in sweep)}


def _parse_table(row: dict[str, Any]) -> str:
  lines = [f"batch size {row['batch_size']:,}: parse (decode + clean), CPU microseconds per "
           f"record", f"  {'stream':8} {'records':>8} {'parse':>7} {'records/s':>10}"]
  for stream in STREAMS:
    lines.append(f"  {stream:8} {row[stream]['records']:8,} "
                 f"{row[stream]['us_per_record']['parse']:7.2f} "
                 f"{row[stream]['records_per_s']:10,.0f}")
  return '\n'.join(lines) + '\n'


def _row_table(row: dict[str, Any]) -> str:
  lines = [f"batch size {row['batch_size']:,}: microseconds per record (one core)",
           f"  {'stream':8} {'parse':>7} {'enrich':>7} {'infer':>7} {'reasons':>7} {'write':>7}"
           f" {'total':>7} {'records/s':>10}"]
  for stream in STREAMS:
    us = row[stream]['us_per_record']
    lines.append(
        f"  {stream:8} {us['parse']:7.1f} {us['enrich']:7.1f} {us['inference']:7.1f} "
        f"{_cell(us.get('reasons'))} "
        f"{us['write']:7.1f} {sum(us.values()):7.1f} {row[stream]['records_per_s']:10,.0f}")
  join = row['join']
  lines.append(f"  join: {join['us_per_host_record']:.2f} us per host record "
               f"({join['flagged_records']:,} flagged, {join['pairs']:,} pairs)")
  return '\n'.join(lines) + '\n'


def _cell(us: Optional[float]) -> str:
  """A stage's figure, or '-' where it did not run (reasons: a model without a profile)."""
  return f'{us:7.1f}' if us is not None else f"{'-':>7}"


def plot(result: dict[str, Any], path: str) -> None:
  plt = common.pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  default = min(result['sweep'], key=lambda r: abs(r['batch_size'] - 1000))
  streams = STREAMS
  bottom = [0.0] * len(streams)
  for stage in ('parse', 'enrich', 'inference', 'reasons', 'write'):
    values = [default[s]['us_per_record'].get(stage, 0.0) for s in streams]
    left.bar(streams, values, bottom=bottom, label=stage)
    bottom = [b + v for b, v in zip(bottom, values)]
  join = default['join']['us_per_host_record']
  left.bar(list(HOST_STREAMS), [join / len(HOST_STREAMS)] * len(HOST_STREAMS),
           bottom=[bottom[streams.index(s)] for s in HOST_STREAMS], label='join (split)')
  left.set_ylabel('microseconds per record, one core')
  left.set_title(f"Per-stage cost at batch size {default['batch_size']:,}")
  left.legend(fontsize=8)
  sizes = [r['batch_size'] for r in result['sweep']]
  for stream in streams:
    right.plot(sizes, [r[stream]['records_per_s'] for r in result['sweep']], marker='o',
               label=stream)
  right.set_xscale('log')
  right.set_xlabel('records per batch (per model call)')
  right.set_ylabel('records/s, one core, all stages')
  right.set_title('Batch-size sweep')
  right.grid(alpha=0.3)
  right.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.stages', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--records', type=int, default=20_000,
                      help='Records per stream (default: %(default)s).')
  parser.add_argument('--batch_size', type=int, action='append',
                      help=f'Records per batch, repeatable (default: {DEFAULT_BATCH_SIZES}).')
  parser.add_argument('--model_dir', default='models',
                      help='Model registry; bootstrapped when empty (default: %(default)s).')
  parser.add_argument('--seed', type=int, default=7)
  parser.add_argument('--kdd_file',
                      help='Network records from this KDD Cup CSV file (plain or gzip), in file '
                      'order, instead of generated ones.')
  parser.add_argument('--spread', action='store_true',
                      help=f'With --kdd_file: blocks of {SPREAD_BLOCK:,} consecutive lines '
                      'spread over the whole file instead of its first lines.')
  parser.add_argument('--only', choices=['parse'],
                      help='Time this stage alone (results: stages_<stage>.json, no plot).')
  parser.add_argument('--results_dir', default=common.DEFAULT_RESULTS)
  args = parser.parse_args(argv)
  if args.spread and not args.kdd_file:
    parser.error('--spread takes blocks of a --kdd_file')
  result = run(args.records, args.batch_size or list(DEFAULT_BATCH_SIZES), args.model_dir,
               args.seed, args.kdd_file, args.only, args.spread)
  if args.only:
    path = common.write_json(args.results_dir, f'stages_{args.only}', result)
    print(f'\nwrote {path}', file=sys.stderr)
    return
  path = common.write_json(args.results_dir, 'stages', result)
  plot(result, path[:-len('.json')] + '.png')
  print(f'\nwrote {path} and stages.png', file=sys.stderr)
  report.refresh_readme(args.results_dir)


if __name__ == '__main__':
  main()
