"""Benchmark (not a test): a sustained run of the stream job on Flink, watching consumer lag and
memory over time.

    python -m benchmarks.soak                              # 5 min at 300 messages/s, own broker
    python -m benchmarks.soak --duration_s 1800 --rate 500 --bootstrap_servers 127.0.0.1:9092

Sends synthetic network traffic at ``--rate`` (token bucket) to a broker (its own, started
with scripts/kafka.sh in a temporary folder, unless ``--bootstrap_servers``), runs
``pipelines.stream`` on embedded Flink with checkpointing (offsets committed to the consumer
group at each checkpoint), and every ``--sample_s`` prints: messages acknowledged, consumer
lag (end offsets minus committed offsets), rows archived, and the resident memory of the job
server JVM (the embedded Flink), of the Python SDK worker processes it starts, and of this
process.

The verdict compares the second half of the run with the first: lag must not grow (its slope
over the second half below 1% of the rate) and memory must level off (RSS growth over the
second half below ``--max_growth_mb``). Exit status 0 when steady, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from typing import Optional

from benchmarks.common import ArchiveCounter, job_server_pids
from generator.rate import TokenBucket
from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages
from harness.kafka import PARTITIONS, STREAMS, Lag, broker_for, make_topics
from harness.procs import descendants, rss_mb
from harness.scripts import ROOT
from pipelines import stream


def _slope(points: list[tuple[float, float]]) -> float:
  """Least-squares slope of (t, y)."""
  n = len(points)
  if n < 2:
    return 0.0
  mt = sum(t for t, _ in points) / n
  my = sum(y for _, y in points) / n
  var = sum((t - mt) ** 2 for t, _ in points)
  return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


def verdict(samples: list[dict], rate: float, max_growth_mb: float) -> dict:
  half = [s for s in samples if s['t'] >= samples[-1]['t'] / 2]
  lag_slope = _slope([(s['t'], s['lag']) for s in half])
  rss = [s['jvm_mb'] + s['workers_mb'] + s['python_mb'] for s in half]
  growth = (rss[-1] - rss[0]) if rss else 0.0
  return {'lag_slope_per_s': round(lag_slope, 2), 'rss_growth_mb_second_half': round(growth, 1),
          'steady': lag_slope < 0.01 * rate and growth < max_growth_mb}


def soak(args: argparse.Namespace, bootstrap: str) -> dict:
  suffix = uuid.uuid4().hex[:8]
  topics = {s: f'soak_{s}_{suffix}' for s in STREAMS}
  make_topics(bootstrap, topics.values(), PARTITIONS)
  group = f'soak-{suffix}'
  output = args.output or tempfile.mkdtemp(prefix='soak-out-')
  sink = KafkaSink(bootstrap, collect_uuids=False)
  stop = threading.Event()

  def send():
    bucket = TokenBucket(args.rate)
    config = SourceConfig(streams=('network',), seed=3, event_rate=args.rate, topics=topics)
    for message in generate_messages(config):
      if stop.is_set():
        break
      bucket.acquire()
      sink.send(message)
    sink.close(60)  # releases the producer too: none keeps reconnecting after the run

  argv = ['--runner=FlinkRunner', f'--flink_master={args.flink_master}',
          f'--bootstrap_servers={bootstrap}', *[f'--{s}_topic={t}' for s, t in topics.items()],
          '--alerts_topic=', f'--output={output}', f'--model_dir={args.model_dir}',
          f'--roll_seconds={args.roll_seconds}', '--checkpointing_interval=5000',
          f'--consumer_group={group}', f'--job_name=soak-{suffix}']
  samples = []
  lag = Lag(bootstrap, topics['network'], group, PARTITIONS)
  archive = ArchiveCounter(os.path.join(output, 'archive', 'network'))
  sender = threading.Thread(target=send, daemon=True)
  with stream.running(argv):
    started = time.monotonic()
    sender.start()
    print(f'{"t (s)":>6} {"acked":>9} {"lag":>7} {"archived":>9} {"JVM MB":>7} '
          f'{"workers MB":>10} {"Py MB":>6}')
    while time.monotonic() - started < args.duration_s:
      time.sleep(args.sample_s)
      jvms = job_server_pids()
      sample = {'t': round(time.monotonic() - started, 1), 'acked': sink.acknowledged,
                'lag': lag(), 'archived': archive.rows(),
                'jvm_mb': round(sum(rss_mb(p) for p in jvms), 1),
                'workers_mb': round(sum(rss_mb(c) for p in jvms for c in descendants(p)), 1),
                'python_mb': round(rss_mb(os.getpid()), 1)}
      samples.append(sample)
      print(f'{sample["t"]:>6.0f} {sample["acked"]:>9} {sample["lag"]:>7} '
            f'{sample["archived"]:>9} {sample["jvm_mb"]:>7.0f} {sample["workers_mb"]:>10.0f} '
            f'{sample["python_mb"]:>6.0f}',
            flush=True)
    stop.set()
    sender.join(90)
  lag.close()
  report = {'rate': args.rate, 'duration_s': args.duration_s, 'sent': sink.sent,
            'acknowledged': sink.acknowledged, 'samples': samples,
            **verdict(samples, args.rate, args.max_growth_mb)}
  print(f'soak: {sink.acknowledged} messages at {args.rate}/s for {args.duration_s:.0f} s; '
        f'lag slope {report["lag_slope_per_s"]}/s, RSS growth over the second half '
        f'{report["rss_growth_mb_second_half"]} MB: '
        f'{"steady" if report["steady"] else "NOT steady"}')
  return report


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.soak', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--duration_s', type=float, default=300)
  parser.add_argument('--rate', type=float, default=300, help='messages/s (default 300)')
  parser.add_argument('--sample_s', type=float, default=10)
  parser.add_argument('--bootstrap_servers', help='an existing broker (default: start one)')
  parser.add_argument('--flink_master', default='[local]')
  parser.add_argument('--model_dir', default=os.path.join(ROOT, 'models'))
  parser.add_argument('--output', help='default: a temporary folder')
  parser.add_argument('--roll_seconds', type=int, default=10)
  parser.add_argument('--max_growth_mb', type=float, default=150,
                      help='allowed RSS growth over the second half (default 150)')
  parser.add_argument('--report_json', help='also write the report here')
  args = parser.parse_args(argv)
  with contextlib.ExitStack() as stack:
    bootstrap, _ = stack.enter_context(broker_for(args.bootstrap_servers, PARTITIONS))
    report = soak(args, bootstrap)
  if args.report_json:
    with open(args.report_json, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1)
  return 0 if report['steady'] else 1


if __name__ == '__main__':
  sys.exit(main())
