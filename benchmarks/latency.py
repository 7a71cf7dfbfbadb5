"""Benchmark (not a test): end-to-end latency of the stream job on Flink, from a network event
being written to Kafka until its alert is in the ``alerts`` topic, at fixed input rates.

    python -m benchmarks.latency                                  # 500 ... 10000 events/s
    python -m benchmarks.latency --rates 1000,5000 --measure_s 30
    python -m benchmarks.latency --max_bundle_time_ms 100 --alerts_linger_ms 5 --name latency-100ms
    python -m benchmarks.latency -- --max_bundle_size=200        # any other stream-job flag

One job (``python -m pipelines.stream --runner=FlinkRunner --flink_master=[local]
--parallelism=2``) runs throughout. Once it answers (the first alert of a trickle of records),
each rate gets ``--warmup_s`` of traffic, then ``--measure_s`` of traffic whose records are
measured; after the last rate, ``--drain_s`` at most for stragglers.

What is measured: only network records. A network anomaly's alert is published as soon as the
record is scored; host-attack alerts wait for the event-time windows of the process x memory
join (60 s windows, watermark, 20 s allowed lateness), so their latency is a property of the
windowing (tens of seconds), not of the pipeline's speed, and is not measured here.

How: a pool of synthetic network records is scored once beforehand with the same model
(through the product's Beam-free functions, benchmarks/baseline.py), so the benchmark knows
which sends must produce an alert. Each send gets a fresh uuid; its send time is taken just
before ``produce()`` (librdkafka producer, linger 1 ms) and is also its Kafka timestamp. A
consumer thread reads the alerts topic (``fetch.wait.max.ms`` 10) and extracts the record uuid
from each alert's ``details``. Latency = alert received - sent (primary), and alert's Kafka
timestamp (set by the job's producer) - input timestamp (without the consumer's fetch delay).
Each alert's own ``processing_time`` (stamped in the Python stage when the alert is made,
right after scoring) splits it in two: send -> scored (source, the Python stage's bundle and
its work) and scored -> in the alerts topic (the way out: the Python worker's output, the
Java Kafka-write stage's bundle, the producer). Percentiles are over the expected alerts of the measured window; an expected alert that never
arrives counts as infinitely late (so p99 is "inf" when more than 1% are missing).

The bundle settings decide most of it: Flink's ``--max_bundle_time_mills`` /
``--max_bundle_size`` (the runner's defaults: 1000 ms / 1000 elements; the stream job sets its
own bundle time on Flink, see ``pipelines/stream.py``) bound how long records wait
in a bundle before RunInference's batch and the Kafka writer flush; ``--alerts_linger_ms`` sets
the job's Kafka producer ``linger.ms`` (through ``--kafka_config``, which also reaches the
consumer, where it is ignored). Prints a table, writes ``latency.json`` and ``latency.png``
under ``--results_dir``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import random
import re
import shutil
import tempfile
import threading
import time
from typing import Any, Optional

from confluent_kafka import Consumer

from benchmarks import common, report
from benchmarks.baseline import process_batch
from generator.messages import network_json_rows, network_message_from_json
from generator.synthetic_network import generate_network
from harness import kafka
from model import registry
from pipelines import startup
from schemas.records import KDD_FEATURES
from transforms import kafka_publish
from transforms.source import SourceMessage

DEFAULT_RATES = (500, 1000, 2000, 5000, 10000)
TARGET_RATE, TARGET_P99_MS = 5000, 1000.0
TICK_S = 0.005


# ---- the record pool --------------------------------------------------------------------------


def record_pool(model_dir: str, size: int, seed: int) -> tuple[list[str], list[bool]]:
  """``size`` network records as JSON text (features + label) and whether the model flags each."""
  frame = generate_network(size, seed=seed)
  rows = network_json_rows(frame[list(KDD_FEATURES) + ['label']])
  rng = random.Random(seed)
  now_ms = int(time.time() * 1000)
  messages, order = [], {}
  for i, row in enumerate(rows):
    m = network_message_from_json(row, topic='pool', timestamp_ms=now_ms, sequence_id=i,
                                  index=i, site='bench', rng=rng)
    order[m.uuids[0]] = i
    messages.append(SourceMessage('network', m.value, 'pool', 0, i, now_ms))
  loaded = registry.load_for_serving(model_dir, 'network')
  flagged = [False] * len(rows)
  for begin in range(0, len(messages), 2000):
    table, _ = process_batch('network', messages[begin:begin + 2000], loaded, 'bench')
    for u, p in zip(table.column('uuid').to_pylist(), table.column('prediction').to_pylist()):
      flagged[order[u]] = bool(p)
  common.log(f'record pool: {len(rows):,} records, {sum(flagged):,} flagged by model '
             f'{loaded.version}')
  return rows, flagged


# ---- traffic and alerts -----------------------------------------------------------------------


_PROCESSING_TIME = re.compile(rb'"processing_time"\s*:\s*"([^"]+)"')


def alert_processing_time(value: bytes) -> Optional[float]:
  """The alert's ``processing_time`` (when the job's Python stage made it, after scoring) as
  epoch seconds, or None."""
  m = _PROCESSING_TIME.search(value)
  if not m:
    return None
  try:
    return datetime.datetime.fromisoformat(m.group(1).decode()).timestamp()
  except ValueError:
    return None


class AlertReader(threading.Thread):
  """Reads the alerts topic from its beginning; keeps (uuid, received time, Kafka ts ms,
  processing time s)."""

  def __init__(self, bootstrap: str, topic: str):
    super().__init__(daemon=True)
    self.consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'bench-{topic}',
                              'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
                              'fetch.wait.max.ms': 10, 'fetch.min.bytes': 1})
    self.consumer.subscribe([topic])
    self.received: list[tuple[Optional[str], float, int, Optional[float]]] = []
    self.stopping = threading.Event()

  def run(self) -> None:
    while not self.stopping.is_set():
      batch = self.consumer.consume(num_messages=1000, timeout=0.05)
      now = time.time()
      for m in batch:
        if m.error() is None:
          value = m.value() or b''
          self.received.append((common.alert_uuid(value), now, m.timestamp()[1],
                                alert_processing_time(value)))
    self.consumer.close()


class Sender:
  """Sends pool records at a fixed rate, each with a fresh uuid and now as event time."""

  def __init__(self, bootstrap: str, topic: str, rows: list[str], flagged: list[bool], seed: int,
               flagged_share: Optional[float] = None):
    self.producer = kafka.producer(bootstrap, **{'linger.ms': 1, 'batch.num.messages': 1000})
    self.topic = topic
    self.rows, self.flagged = rows, flagged
    self.rng = random.Random(seed + 1)
    self.pick = random.Random(seed + 2)
    self.share = flagged_share
    self.flagged_rows = [i for i, f in enumerate(flagged) if f]
    self.normal_rows = [i for i, f in enumerate(flagged) if not f]
    if flagged_share is not None and not (self.flagged_rows and self.normal_rows):
      raise ValueError('the pool needs flagged and unflagged records for --flagged_share')
    self.index = 0
    # uuid -> (tag, send time s, send timestamp ms) of the expected alerts of measured windows
    self.expected: dict[str, tuple[Any, float, int]] = {}
    self.sent: dict[Any, int] = {}

  def _one(self, tag) -> None:
    if self.share is None:
      i = self.index % len(self.rows)
    elif self.pick.random() < self.share:
      i = self.flagged_rows[self.pick.randrange(len(self.flagged_rows))]
    else:
      i = self.normal_rows[self.pick.randrange(len(self.normal_rows))]
    now = time.time()
    now_ms = int(now * 1000)
    m = network_message_from_json(self.rows[i], topic=self.topic, timestamp_ms=now_ms,
                                  sequence_id=self.index, index=i, site='bench', rng=self.rng)
    while True:
      try:
        self.producer.produce(self.topic, value=m.value, timestamp=now_ms)
        break
      except BufferError:
        self.producer.poll(0.01)
    if tag is not None and self.flagged[i]:
      self.expected[m.uuids[0]] = (tag, now, now_ms)
    self.index += 1

  def send(self, rate: float, seconds: float, tag=None,
           until: Optional[threading.Event] = None) -> float:
    """Sends at ``rate``/s for ``seconds`` (or until ``until`` is set); returns the rate
    achieved."""
    t0 = time.monotonic()
    n = 0
    next_tick = t0
    while True:
      elapsed = time.monotonic() - t0
      if elapsed >= seconds or (until is not None and until.is_set()):
        break
      due = int(rate * elapsed) + 1
      while n < due:
        self._one(tag)
        n += 1
      self.producer.poll(0)
      next_tick += TICK_S
      pause = next_tick - time.monotonic()
      if pause > 0:
        time.sleep(pause)
      else:
        next_tick = time.monotonic()
    self.sent[tag] = self.sent.get(tag, 0) + n
    self.producer.flush(10)
    return n / max(time.monotonic() - t0, 1e-9)


# ---- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
  """Nearest-rank percentile; ``inf`` entries stand for alerts that never came."""
  if not sorted_values:
    return math.nan
  k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
  return sorted_values[k]


def level_stats(rate, achieved, sent, expected, received) -> dict[str, Any]:
  wall, kafka_ts, timeline, scored, published = [], [], [], [], []
  for u, (tag, t_send, ts_send) in expected.items():
    if tag != rate:
      continue
    got = received.get(u)
    if got is None:
      wall.append(math.inf)
      kafka_ts.append(math.inf)
      continue
    t_recv, ts_alert, t_scored = got
    wall.append((t_recv - t_send) * 1000)
    kafka_ts.append(float(ts_alert - ts_send))
    if t_scored is not None:
      scored.append((t_scored - t_send) * 1000)
      published.append(ts_alert - t_scored * 1000)
    timeline.append((round(t_send, 3), round((t_recv - t_send) * 1000, 1)))
  wall.sort()
  kafka_ts.sort()
  missing = sum(1 for v in wall if v == math.inf)
  out = {'rate': rate, 'achieved_rate': round(achieved, 1), 'sent': sent,
         'alerts_expected': len(wall), 'alerts_received': len(wall) - missing,
         'alerts_missing': missing}
  scored.sort()
  published.sort()
  for name, values in (('ms', wall), ('kafka_ts_ms', kafka_ts), ('to_scored_ms', scored),
                       ('scored_to_topic_ms', published)):
    for q in (50, 95, 99):
      out[f'p{q}_{name}'] = percentile(values, q)
    finite = [v for v in values if v != math.inf]
    out[f'max_{name}'] = max(finite) if finite else math.nan
  out['timeline'] = timeline[::max(1, len(timeline) // 400)]
  return out


# ---- report -----------------------------------------------------------------------------------


def _ms(v) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return 'n/a'
  if v == math.inf:
    return 'inf'
  return f'{v:,.0f}'


def _table(result: dict[str, Any]) -> str:
  s = result['settings']
  lines = [f"machine: {common.machine_line(result['machine'])}",
           f"job: FlinkRunner [local], parallelism {s['parallelism']}, {s['partitions']} partitions; "
           f"max_bundle_time_mills {s['max_bundle_time_ms']}, max_bundle_size "
           f"{s['max_bundle_size']}, alerts producer linger.ms {s['alerts_linger_ms']} "
           f"(defaults: {', '.join(s.get('defaults') or []) or 'none'}); "
           f"extra {s['extra_job_flags'] or 'none'}",
           'job flags in effect: ' + ', '.join(
               f'{k}={v}' for k, v in (s.get('effective_job_flags') or {}).items()),
           f"startup (job process start -> first alert): {common.fmt(result['startup_s'], 1)} s; "
           f"warm-up {s['warmup_s']} s + measured {s['measure_s']} s per rate",
           'job startup phases (its startup line): ' + (', '.join(
               f'{k} {v:.1f} s' for k, v in result['startup_phases'].items())
               if result.get('startup_phases') else 'none logged'),
           '',
           f"{'rate/s':>7} {'achieved':>9} {'alerts':>8} {'missing':>7} {'p50 ms':>8} "
           f"{'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 (Kafka ts)':>15}"]
  for lv in result['levels']:
    lines.append(f"{lv['rate']:>7,} {lv['achieved_rate']:>9,.0f} {lv['alerts_expected']:>8,} "
                 f"{lv['alerts_missing']:>7,} {_ms(lv['p50_ms']):>8} {_ms(lv['p95_ms']):>8} "
                 f"{_ms(lv['p99_ms']):>8} {_ms(lv['max_ms']):>8} {_ms(lv['p99_kafka_ts_ms']):>15}")
  lines.append('')
  lines.append('where it goes, p50 / p95 / p99 ms of received alerts: send -> scored (the '
               'alert\'s processing_time, made in the Python stage) | scored -> in the alerts '
               'topic (alert\'s Kafka timestamp)')
  for lv in result['levels']:
    lines.append(f"{lv['rate']:>7,}: " + ' / '.join(
        _ms(lv.get(f'p{q}_to_scored_ms')) for q in (50, 95, 99)) + ' | ' + ' / '.join(
        _ms(lv.get(f'p{q}_scored_to_topic_ms')) for q in (50, 95, 99)))
  best = result['max_rate_p99_under_1s']
  lines.append('')
  lines.append(f"highest measured rate with p99 < 1 s: {f'{best:,}/s' if best else 'none'} "
               f"(target: p99 < 1 s at {TARGET_RATE:,}/s)")
  lines.append('network alerts only; host-attack alerts wait for the join\'s event-time windows')
  mem = result['memory']['peak_rss_mb']
  lines.append('peak RSS (MB): ' + ', '.join(f'{r} {mb:,}' for r, mb in mem.items()))
  workers = result['memory'].get('python_sdk_worker_processes')
  lines.append('Python SDK harness: ' + (f'PROCESS ({workers} worker processes)' if workers
                                         else 'LOOPBACK (threads in the job process)'))
  return '\n'.join(lines)


def plot(result: dict[str, Any], path: str) -> None:
  plt = common.pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
  levels = result['levels']
  rates = [lv['rate'] for lv in levels]
  for q, style in ((50, 'o-'), (95, 's-'), (99, '^-')):
    values = [lv[f'p{q}_ms'] for lv in levels]
    left.plot(rates, [v if v != math.inf else float('nan') for v in values], style,
              label=f'p{q}')
  left.axhline(TARGET_P99_MS, color='red', linestyle='--', linewidth=1, label='1 s')
  for lv in levels:
    if lv['p99_ms'] == math.inf:
      left.annotate(f"p99 inf\n({lv['alerts_missing']:,} missing)", (lv['rate'], TARGET_P99_MS),
                    fontsize=7, ha='center', va='bottom')
  left.set_xscale('log')
  left.set_yscale('log')
  left.set_xticks(rates, [f'{r:,}' for r in rates], fontsize=7)
  left.minorticks_off()
  left.set_xlabel('input rate (network events/s)')
  left.set_ylabel('event -> alert latency (ms)')
  left.set_title('latency percentiles', fontsize=10)
  left.legend(fontsize=8)
  t0 = min((t for lv in levels for t, _ in lv['timeline']), default=0)
  for lv in levels:
    if lv['timeline']:
      right.plot([t - t0 for t, _ in lv['timeline']], [ms for _, ms in lv['timeline']], '.',
                 markersize=2, label=f"{lv['rate']:,}/s")
  right.set_yscale('log')
  right.set_xlabel('send time (s, measured windows)')
  right.set_ylabel('latency (ms)')
  right.set_title('latency of sampled records over the run', fontsize=10)
  right.legend(fontsize=7, markerscale=4)
  s = result['settings']
  fig.suptitle(f"{result['machine']['cores']} cores, max bundle {s['max_bundle_time_ms']} ms / "
               f"{s['max_bundle_size']} elements, alerts linger {s['alerts_linger_ms']} ms, "
               f"{result['machine']['when_utc']} UTC", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


# ---- main -------------------------------------------------------------------------------------


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rates', default=','.join(str(r) for r in DEFAULT_RATES),
                      help='Input rates, events/s, comma-separated (default: %(default)s).')
  parser.add_argument('--warmup_s', type=float, default=10)
  parser.add_argument('--initial_warmup_s', type=float, default=20,
                      help='Extra warm-up before the first rate: the first seconds after the job '
                      'starts are slow (JIT, model load, start-up backlog; default: %(default)s).')
  parser.add_argument('--measure_s', type=float, default=25)
  parser.add_argument('--drain_s', type=float, default=30,
                      help='After the last rate, wait this long at most for missing alerts.')
  parser.add_argument('--startup_timeout_s', type=float, default=240)
  parser.add_argument('--max_bundle_time_ms', type=int, default=None,
                      help='Flink --max_bundle_time_mills (default: the stream job\'s own, '
                      'else the runner\'s 1000).')
  parser.add_argument('--max_bundle_size', type=int, default=None,
                      help='Flink --max_bundle_size (default: the runner\'s, 1000).')
  parser.add_argument('--alerts_linger_ms', type=int, default=None,
                      help='linger.ms of the job\'s alerts producer (default: the job\'s, '
                      f'{kafka_publish.DEFAULT_LINGER_MS}; kafka-clients\' 0 with '
                      '-- --kafka_producer=java).')
  parser.add_argument('--partitions', type=int, default=4)
  parser.add_argument('--parallelism', type=int, default=2)
  parser.add_argument('--roll_seconds', type=int, default=10,
                      help='The job\'s archive roll (does not delay alerts; default: %(default)s).')
  parser.add_argument('--pool', type=int, default=20_000, help='Distinct records cycled through.')
  parser.add_argument('--flagged_share', type=float, default=0.1,
                      help='Share of sends drawn from the records the model flags, for enough '
                      'alerts to measure p99 (default: %(default)s; the model alerts on ~1%% of '
                      'the synthetic mix); negative: the pool\'s own mix, in order.')
  parser.add_argument('--bootstrap_servers', default=None)
  parser.add_argument('--model_dir', default='models')
  parser.add_argument('--results_dir', default=common.DEFAULT_RESULTS)
  parser.add_argument('--name', default='latency')
  parser.add_argument('--work_dir', default=None)
  parser.add_argument('--keep', action='store_true')
  parser.add_argument('--seed', type=int, default=2)
  args, extra = parser.parse_known_args(argv)
  extra = [a for a in extra if a != '--']
  rates = [int(r) for r in args.rates.split(',') if r.strip()]
  args.model_dir = os.path.abspath(args.model_dir)
  common.ensure_models(args.model_dir)
  job_flags = list(extra)
  if args.max_bundle_time_ms is not None:
    job_flags.append(f'--max_bundle_time_mills={args.max_bundle_time_ms}')
  if args.max_bundle_size is not None:
    job_flags.append(f'--max_bundle_size={args.max_bundle_size}')
  if args.alerts_linger_ms is not None:
    job_flags.append(f'--kafka_config=linger.ms={args.alerts_linger_ms}')
  effective = common.effective_job_flags([f'--parallelism={args.parallelism}', *job_flags])
  result: dict[str, Any] = {
      'benchmark': 'latency', 'machine': common.machine_info(),
      'settings': {'rates': rates, 'warmup_s': args.warmup_s, 'measure_s': args.measure_s,
                   'drain_s': args.drain_s, 'initial_warmup_s': args.initial_warmup_s,
                   'partitions': args.partitions,
                   'parallelism': args.parallelism, 'roll_seconds': args.roll_seconds,
                   # Unset flags: the product's / runner's / kafka-clients' defaults (listed
                   # in 'defaults'; 'effective_job_flags' shows what the job ran with).
                   'max_bundle_time_ms': args.max_bundle_time_ms or _number(
                       effective.get('max_bundle_time_mills')),
                   'max_bundle_size': args.max_bundle_size or _number(
                       effective.get('max_bundle_size')),
                   'effective_job_flags': effective,
                   'alerts_linger_ms': (
                       args.alerts_linger_ms if args.alerts_linger_ms is not None
                       else 0 if effective.get('kafka_producer') == kafka_publish.JAVA
                       else kafka_publish.DEFAULT_LINGER_MS),
                   'defaults': [name for name, value in (
                       ('max_bundle_time_ms', args.max_bundle_time_ms),
                       ('max_bundle_size', args.max_bundle_size),
                       ('alerts_linger_ms', args.alerts_linger_ms)) if value is None],
                   'extra_job_flags': extra, 'job_flags': job_flags, 'pool': args.pool,
                   'flagged_share': args.flagged_share,
                   'measured': 'network anomaly alerts only', 'runner': 'FlinkRunner [local]',
                   'own_broker': not args.bootstrap_servers, 'model_dir': args.model_dir},
  }
  rows, flagged = record_pool(args.model_dir, args.pool, args.seed)
  work = args.work_dir or tempfile.mkdtemp(prefix='bench-latency-')
  os.makedirs(work, exist_ok=True)
  planned = len(rates) * (args.warmup_s + args.measure_s) + args.drain_s
  try:
    with kafka.broker_for(args.bootstrap_servers, args.partitions) as (bootstrap, broker_pid):
      topics = kafka.fresh_topics('lat')
      kafka.make_topics(bootstrap, topics.values(), args.partitions)
      reader = AlertReader(bootstrap, topics['alerts'])
      reader.start()
      share = None if args.flagged_share < 0 else args.flagged_share
      sender = Sender(bootstrap, topics['network'], rows, flagged, args.seed, share)
      job = common.StreamJob(common.stream_args(
          bootstrap=bootstrap, topics=topics, output=os.path.join(work, 'job-out'),
          model_dir=args.model_dir, parallelism=args.parallelism,
          roll_seconds=args.roll_seconds, run_for_s=args.startup_timeout_s + planned + 120,
          job_name=f'bench-latency-{topics["alerts"][-8:]}', extra=job_flags),
          os.path.join(work, 'stream.log'))
      job.start()
      sampler = common.MemorySampler({'python_job': job.pid, 'kafka_broker': broker_pid})
      levels = []
      try:
        with sampler:
          # A trickle until the first alert: the job is deployed and reading.
          ready, waited = threading.Event(), threading.Event()

          def watch():
            while not ready.is_set() and job.alive():
              if reader.received:
                ready.set()
              time.sleep(0.1)
            waited.set()  # an alert, or the job is gone

          threading.Thread(target=watch, daemon=True).start()
          sender.send(50, args.startup_timeout_s, tag=None, until=waited)
          if not ready.is_set():
            raise RuntimeError(f'no alert within {args.startup_timeout_s} s of the job start; '
                               f'last lines of {job.log_path}:\n{job.tail()}')
          result['startup_s'] = time.monotonic() - job.started
          common.log(f'first alert {result["startup_s"]:.1f} s after the job process started')
          achieved = {}
          for n, rate in enumerate(rates):
            warmup = args.warmup_s + (args.initial_warmup_s if n == 0 else 0)
            common.log(f'rate {rate:,}/s: {warmup:.0f} s warm-up, {args.measure_s:.0f} s '
                       f'measured')
            sender.send(rate, warmup, tag=None)
            achieved[rate] = sender.send(rate, args.measure_s, tag=rate)
            if not job.alive():
              raise RuntimeError(f'the job exited; last lines of {job.log_path}:\n{job.tail()}')
          deadline = time.monotonic() + args.drain_s
          while time.monotonic() < deadline:
            got = {u for u, _, _, _ in reader.received}
            if all(u in got for u in sender.expected):
              break
            time.sleep(0.5)
      finally:
        job.stop()
        reader.stopping.set()
        reader.join(10)
        sender.producer.flush(5)
        sender.producer = None  # no reconnect noise once the broker is gone
        gc.collect()
      received = {}
      for u, t, ts, scored in reader.received:
        if u is not None and u not in received:
          received[u] = (t, ts, scored)
      for rate in rates:
        lv = level_stats(rate, achieved.get(rate, 0.0), sender.sent.get(rate, 0),
                         sender.expected, received)
        levels.append(lv)
        common.log(f"rate {rate:,}/s: p50 {_ms(lv['p50_ms'])} ms, p95 {_ms(lv['p95_ms'])} ms, "
                   f"p99 {_ms(lv['p99_ms'])} ms; {lv['alerts_missing']:,} of "
                   f"{lv['alerts_expected']:,} alerts missing")
      result['levels'] = levels
      with open(job.log_path, encoding='utf-8', errors='replace') as f:
        result['startup_phases'] = startup.parse_summary(f.read())
      result['memory'] = sampler.result()
      result['alerts_received_total'] = len(reader.received)
  finally:
    if not args.keep and not args.work_dir:
      shutil.rmtree(work, ignore_errors=True)
  passing = [lv['rate'] for lv in levels
             if lv['p99_ms'] < TARGET_P99_MS and lv['alerts_missing'] <= 0.01 * lv['alerts_expected']
             and lv['achieved_rate'] >= 0.95 * lv['rate']]
  result['max_rate_p99_under_1s'] = max(passing) if passing else None
  return report.publish(args.results_dir, args.name, result, plot, _table(result),
                        as_json=_json_safe)


def _number(text) -> Optional[int]:
  try:
    return int(str(text).split()[0])
  except (ValueError, IndexError):
    return None


def _json_safe(value):
  """inf / nan -> strings (JSON has neither)."""
  if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
    return str(value)
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


if __name__ == '__main__':
  main()
