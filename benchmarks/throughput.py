"""Benchmark (not a test): sustained throughput of the stream job on Flink, end to end to the
Parquet archive, from pre-filled Kafka topics; and the bare baseline on the same data.

    python -m benchmarks.throughput                          # network 300k msgs, host 150k records
    python -m benchmarks.throughput --streams network --network_messages 1000000
    python -m benchmarks.throughput --bootstrap_servers 127.0.0.1:9092   # an existing broker
    python -m benchmarks.throughput -- --max_bundle_size=5000   # extra stream-job flags

For each phase (``network``: network messages; ``host``: process + memory messages, counted in
host records) it:

1. creates fresh topics (``--partitions``, default 4) and pre-fills them with the generator's
   synthetic traffic (no malformed messages), event times ending about now;
2. runs the bare baseline (``benchmarks/baseline.py``: confluent-kafka + the product's Beam-free
   parse / enrich / score functions + Parquet, one Python process, no Beam) over the topic;
3. runs ``python -m pipelines.stream --runner=FlinkRunner --flink_master=[local]
   --parallelism=2 --roll_seconds=1`` reading the topics from earliest (a fresh consumer group),
   and polls the archive's Parquet footers every 0.5 s until every record is archived or
   dead-lettered (or ``--timeout_s``, or no progress for ``--stall_s``), then stops the job;
4. samples VmRSS / VmHWM of the job's process tree (the Python process that hosts the LOOPBACK
   SDK harness, the job server JVM running the embedded Flink, the expansion service JVM) and
   of the broker.

Reported per phase: records/s sustained (least-squares slope of archived rows over time between
10% and 90% of the total), records/s overall (first output -> everything archived), time to
first output (job process start -> first archived row; includes the job server start, pipeline
expansion, submission and one roll), the baseline's records/s and the ratio job / baseline;
peak memory per process role. Prints a table, writes ``throughput.json`` and ``throughput.png``
under ``--results_dir``. ``--stage_cpu`` adds where the SDK workers' CPU goes in the steady
window: per DoFn method, fused stage and thread (pipelines/stage_cpu.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

from benchmarks import common, report
from benchmarks.baseline import path_name
from generator.source import SourceConfig, generate_messages
from harness import kafka
from harness.scripts import ROOT
from pipelines import stage_cpu
from schemas.records import HOST_STREAMS, SCHEMAS

TARGET_NETWORK_PER_S = 20_000
# After the last archived row: the job's last roll and the checkpoint after it are written
# by then, so the window sees the job with nothing to do.
IDLE_SETTLE_S = 15
STREAMS = {'network': tuple(s for s in SCHEMAS if not SCHEMAS[s].joined), 'host': HOST_STREAMS}


# ---- pre-fill ---------------------------------------------------------------------------------


def prefill(bootstrap: str, phase: str, topics: dict[str, str], *, network_messages: int,
            host_records: int, machines: int, seed: int) -> dict[str, Any]:
  """Fills the phase's topics; returns messages and records sent, and how long it took."""
  t0 = time.monotonic()
  now_ms = int(time.time() * 1000)
  streams = STREAMS[phase]
  if not any(SCHEMAS[s].is_array for s in streams):  # one record per message
    config = SourceConfig(streams=streams, count=network_messages, seed=seed,
                          event_rate=1000.0, start_ms=now_ms - network_messages, topics=topics,
                          site='bench')
    sent = kafka.produce_all(bootstrap, generate_messages(config))
    records = sent
  else:
    config = SourceConfig(streams=streams, seed=seed, machines=machines,
                          start_ms=now_ms - 4 * 3600 * 1000, topics=topics, site='bench')
    counted = {'records': 0}

    def until_enough():
      for message in generate_messages(config):
        if counted['records'] >= host_records:
          return
        counted['records'] += len(json.loads(message.value))
        yield message

    sent = kafka.produce_all(bootstrap, until_enough())
    records = counted['records']
  seconds = time.monotonic() - t0
  common.log(f'{phase}: pre-filled {sent:,} messages ({records:,} records) in {seconds:.1f} s')
  return {'messages': sent, 'records': records, 'seconds': round(seconds, 1)}


# ---- the baseline -----------------------------------------------------------------------------


def run_baseline(bootstrap: str, phase: str, topics: dict[str, str], model_dir: str,
                 work: str, timeout_s: float, batch: int) -> dict[str, Any]:
  topic = ','.join(topics[s] for s in STREAMS[phase])
  log_path = os.path.join(work, 'baseline.log')
  common.log(f'{phase}: bare baseline (log {log_path})')
  with open(log_path, 'w', encoding='utf-8') as logf:
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks.baseline', f'--bootstrap_servers={bootstrap}',
         f'--stream={phase}', f'--topic={topic}', f'--model_dir={model_dir}',
         f'--output={os.path.join(work, "baseline-out")}', f'--batch={batch}',
         f'--timeout_s={timeout_s}'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=logf, text=True, check=False,
        timeout=timeout_s + 120)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('BENCH ')]
  if proc.returncode or not lines:
    common.log(f'{phase}: the baseline failed ({proc.returncode}); see {log_path}')
    return {'error': f'exit {proc.returncode}', 'log': log_path}
  result = json.loads(lines[-1][len('BENCH '):])
  common.log(f"{phase}: baseline {result['records']:,} records in {result['seconds']:.1f} s = "
             f"{common.fmt(result['records_per_s'])}/s ({result['path']})")
  return result


# ---- the stream job ---------------------------------------------------------------------------


def run_job(bootstrap: str, broker_pid: Optional[int], phase: str, topics: dict[str, str],
            expected: int, args, work: str, extra: list[str], *, stage_cpu_on: bool = False,
            idle_s: float = 0.0) -> dict[str, Any]:
  """One run of the stream job until ``expected`` records are archived. ``args``: the flags
  both this benchmark and benchmarks.peer have (model_dir, parallelism, roll_seconds, the
  timeouts, poll_s); ``stage_cpu_on``, ``idle_s``: this benchmark's --stage_cpu, --idle_s."""
  output = os.path.join(work, 'job-out')
  job_name = f'bench-throughput-{phase}-{os.path.basename(work)[-8:]}'.lower().replace('_', '-')
  job = common.StreamJob(common.stream_args(
      bootstrap=bootstrap, topics=topics, output=output, model_dir=args.model_dir,
      parallelism=args.parallelism, roll_seconds=args.roll_seconds,
      run_for_s=args.timeout_s + 30, job_name=job_name, extra=extra),
      os.path.join(work, 'stream.log'),
      env={stage_cpu.DIR_ENV: os.path.join(work, 'stage-cpu')} if stage_cpu_on else None)
  archive = [common.ArchiveCounter(os.path.join(output, 'archive', s)) for s in STREAMS[phase]]
  dead = common.ArchiveCounter(os.path.join(output, 'dead_letter'))
  samples: list[tuple[float, int]] = []
  first_output = None
  status = 'timeout'
  idle = None
  job.start()
  wall_offset = time.time() - time.monotonic()
  sampler = common.MemorySampler({'python_job': job.pid, 'kafka_broker': broker_pid})
  last_change, last_total = time.monotonic(), -1
  try:
    with sampler:
      while True:
        time.sleep(args.poll_s)
        t = time.monotonic() - job.started
        rows = sum(c.rows() for c in archive)
        dead_rows = dead.rows()
        samples.append((round(t, 2), rows))
        if rows and first_output is None:
          first_output = t
          common.log(f'{phase}: first archived rows after {t:.1f} s')
        if rows + dead_rows != last_total:
          last_total, last_change = rows + dead_rows, time.monotonic()
        if rows + dead_rows >= expected:
          status = 'complete'
          idle = idle_cpu(sampler, job, idle_s)
          break
        if not job.alive():
          status = 'job exited'
          break
        if t > args.timeout_s:
          break
        if first_output is not None and time.monotonic() - last_change > args.stall_s:
          status = f'stalled ({args.stall_s:.0f} s without new rows)'
          break
        if len(samples) % int(10 / args.poll_s) == 0:
          common.log(f'{phase}: {rows:,} / {expected:,} archived at {t:.0f} s')
  finally:
    rc = job.stop()
  if status != 'complete':
    common.log(f'{phase}: job run ended: {status}; last lines of {job.log_path}:\n{job.tail()}')
  rows = samples[-1][1] if samples else 0
  done_t = next((t for t, r in samples if r >= rows), None) if rows else None
  steady = common.steady_rate(samples, rows) if rows else None
  overall = (rows / (done_t - first_output)
             if rows and done_t and first_output is not None and done_t > first_output else None)
  memory = sampler.result()
  workers = sampler.sdk_workers()
  environment = (f'PROCESS ({workers} Python SDK worker processes)' if workers else
                 'LOOPBACK (SDK harness threads in the job process)')
  common.log(f'{phase}: job {rows:,} records, steady {common.fmt(steady)}/s, overall '
             f'{common.fmt(overall)}/s, first output {common.fmt(first_output, 1)} s ({status})')
  return {
      'status': status, 'exit_code': rc, 'records_expected': expected,
      'records_archived': rows, 'dead_letters': dead.rows(), 'files': sum(c.files() for c in archive),
      'records_per_s_steady': steady, 'records_per_s_overall': overall,
      'first_output_s': first_output, 'all_archived_s': done_t if status == 'complete' else None,
      'environment': environment, 'samples': samples, 'memory': memory, 'log': job.log_path,
      'steady_cpu': common.steady_cpu(sampler, samples, job.started),
      'idle_cpu': idle,
      'stage_cpu': (steady_stage_cpu(os.path.join(work, 'stage-cpu'), samples,
                                     wall_offset + job.started) if stage_cpu_on else None),
  }


def idle_cpu(sampler: common.MemorySampler, job: common.StreamJob,
             seconds: float) -> Optional[dict[str, Any]]:
  """The cores each role of the running job uses with nothing left to read, over ``seconds``
  that start ``IDLE_SETTLE_S`` after the last record was archived (its last roll written):
  what the job costs whether records flow or not. None for ``seconds`` 0."""
  if seconds <= 0:
    return None
  common.log(f'idle: measuring the job\'s CPU for {seconds:.0f} s with nothing to read')
  time.sleep(IDLE_SETTLE_S)
  start = time.monotonic()
  while time.monotonic() - start < seconds and job.alive():
    time.sleep(0.5)
  elapsed = time.monotonic() - start
  cpu = {k: v for k, v in sampler.cpu_between(start, start + elapsed).items()
         if k.split(' ')[0] != 'kafka_broker'}
  cores = {k: round(v / elapsed, 3) for k, v in cpu.items() if v > 0}
  cores['total'] = round(sum(v for k, v in cpu.items() if ' ' not in k) / elapsed, 3)
  return {'seconds': round(elapsed, 1), 'cores': cores}


def idle_cpu_line(idle: Optional[dict[str, Any]]) -> str:
  if not idle:
    return 'n/a'
  cores = idle['cores']
  return (f"{cores['total']:.2f} cores over {idle['seconds']:.0f} s: "
          + common.roles_line(cores, 2))


def steady_stage_cpu(folder: str, samples: list[tuple[float, int]],
                     started_wall: float) -> Optional[dict[str, float]]:
  """The SDK workers' own accounts (pipelines/stage_cpu.py) over the run's steady window:
  microseconds of CPU per archived record, per DoFn method, bundle kind and thread."""
  band = common.steady_band(samples)
  if band is None:
    return None
  (t1, r1), (t2, r2) = band
  return stage_cpu.window(stage_cpu.read_snapshots(folder), started_wall + t1,
                          started_wall + t2, r2 - r1)


def stage_cpu_table(per_record: dict[str, float]) -> str:
  """The workers' CPU per record: whole processes, then each thread kind, bundle kind and DoFn
  method, largest first."""
  groups = (('threads', 'thread '), ('bundles (a fused stage each)', 'bundle '),
            ('DoFn methods', ''))
  lines = [f"  SDK workers, whole processes: {per_record.get('process', 0):.1f} us/record"]
  for title, prefix in groups:
    rows = sorted(((k, v) for k, v in per_record.items() if k != 'process' and (
        k.startswith(prefix) if prefix else not k.startswith(('thread ', 'bundle ')))),
        key=lambda kv: -kv[1])
    lines.append(f'  {title}:')
    lines += [f'    {v:7.1f}  {k[len(prefix):]}' for k, v in rows]
  return '\n'.join(lines)


# ---- report -----------------------------------------------------------------------------------


def _table(result: dict[str, Any]) -> str:
  lines = [f"machine: {common.machine_line(result['machine'])}",
           f"job: FlinkRunner [local], parallelism {result['settings']['parallelism']}, "
           f"{result['settings']['partitions']} partitions, roll {result['settings']['roll_seconds']} s, "
           f"extra flags {result['settings']['extra_job_flags'] or 'none'}; baseline path: "
           f"{result['settings'].get('baseline_path')}",
           'job flags in effect: ' + ', '.join(
               f'{k}={v}' for k, v in result['settings'].get('effective_job_flags', {}).items()),
           '',
           f"{'stream':<8} {'records':>9} {'job rec/s':>10} {'(overall)':>10} {'startup s':>9} "
           f"{'baseline rec/s':>14} {'job/baseline':>12}  status"]
  for phase, p in result['phases'].items():
    job, base = p['job'], p.get('baseline') or {}
    lines.append(
        f"{phase:<8} {p['prefill']['records']:>9,} {common.fmt(job['records_per_s_steady']):>10} "
        f"{common.fmt(job['records_per_s_overall']):>10} {common.fmt(job['first_output_s'], 1):>9} "
        f"{common.fmt(base.get('records_per_s')):>14} {common.fmt(p.get('ratio'), 2):>12}  "
        f"{job['status']}")
  lines.append('')
  lines.append('peak RSS (MB, summed per role; VmHWM = largest single-process high-water mark):')
  for phase, p in result['phases'].items():
    mem = p['job']['memory']
    parts = [f"{role} {mb:,}" for role, mb in mem['peak_rss_mb'].items()]
    base = (p.get('baseline') or {}).get('peak_rss_mb')
    lines.append(f"  {phase:<8} " + ', '.join(parts) +
                 (f"; baseline process {base:,.0f}" if base else ''))
  envs = sorted({p['job'].get('environment') or '?' for p in result['phases'].values()})
  lines.append(f"Python SDK harness: {'; '.join(envs)}")
  for phase, p in result['phases'].items():
    steady = p['job'].get('steady_cpu')
    lines.append(f'steady CPU, {phase}: {common.steady_cpu_line(steady)}')
    if p['job'].get('idle_cpu'):
      lines.append(f"idle CPU, {phase} (after the run, nothing to read): "
                   f"{idle_cpu_line(p['job']['idle_cpu'])}")
    if p['job'].get('stage_cpu'):
      lines.append(f'where the SDK workers spend it, {phase} (steady window, us of CPU per '
                   f'archived record; pipelines/stage_cpu.py):')
      lines.append(stage_cpu_table(p['job']['stage_cpu']))
  lines.append(f"target: {TARGET_NETWORK_PER_S:,} network events/s sustained; job >= 0.5 x baseline")
  return '\n'.join(lines)


def plot(result: dict[str, Any], path: str) -> None:
  plt = common.pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
  for phase, p in result['phases'].items():
    samples = p['job']['samples']
    if samples:
      left.plot([t for t, _ in samples], [r for _, r in samples], label=f'{phase} (job)')
  left.set_xlabel('seconds since the job process started')
  left.set_ylabel('records archived')
  left.set_title('stream job on Flink: archive rows', fontsize=10)
  left.legend(fontsize=8)
  names, job_rates, base_rates = [], [], []
  for phase, p in result['phases'].items():
    names.append(phase)
    job_rates.append(p['job']['records_per_s_steady'] or 0)
    base_rates.append((p.get('baseline') or {}).get('records_per_s') or 0)
  x = range(len(names))
  bars = right.bar([i - 0.2 for i in x], job_rates, width=0.4, label='stream job (Flink)')
  right.bar_label(bars, labels=[f'{v:,.0f}' for v in job_rates], fontsize=7)
  bars = right.bar([i + 0.2 for i in x], base_rates, width=0.4, label='bare baseline')
  right.bar_label(bars, labels=[f'{v:,.0f}' for v in base_rates], fontsize=7)
  if 'network' in names:
    right.axhline(TARGET_NETWORK_PER_S, color='red', linestyle='--', linewidth=1,
                  label=f'target {TARGET_NETWORK_PER_S:,}/s (network)')
  right.set_xticks(list(x), names)
  right.set_ylabel('records / s')
  right.set_title('sustained throughput', fontsize=10)
  right.legend(fontsize=7, loc='center right')
  fig.suptitle(f"{result['machine']['cores']} cores, {result['machine']['when_utc']} UTC",
               fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--streams', default='network,host',
                      help='Phases to run, comma-separated: network, host (default: %(default)s).')
  # About 40 s of work for the job each: with 20 s, one slow roll moved the steady rate by 15%.
  parser.add_argument('--network_messages', type=int, default=600_000,
                      help='Network messages to pre-fill (default: %(default)s).')
  parser.add_argument('--host_records', type=int, default=600_000,
                      help='Process + memory records to pre-fill (default: %(default)s).')
  parser.add_argument('--machines', type=int, default=50, help='Simulated hosts (host phase).')
  parser.add_argument('--partitions', type=int, default=4, choices=(1, 2, 4, 8))
  parser.add_argument('--parallelism', type=int, default=2)
  parser.add_argument('--roll_seconds', type=int, default=1)
  parser.add_argument('--bootstrap_servers', default=None,
                      help='Use this broker instead of starting one (scripts/kafka.sh).')
  parser.add_argument('--model_dir', default='models',
                      help='Model registry; bootstrapped when empty (default: %(default)s).')
  parser.add_argument('--results_dir', default=common.DEFAULT_RESULTS)
  parser.add_argument('--name', default='throughput', help='Result file names (default: %(default)s).')
  parser.add_argument('--work_dir', default=None, help='Job outputs and logs (default: a temp dir, '
                      'removed unless --keep).')
  parser.add_argument('--keep', action='store_true')
  parser.add_argument('--no_baseline', action='store_true')
  parser.add_argument('--baseline_batch', type=int, default=1000)
  parser.add_argument('--timeout_s', type=float, default=600)
  parser.add_argument('--stall_s', type=float, default=60)
  parser.add_argument('--poll_s', type=float, default=0.5)
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument('--idle_s', type=float, default=0,
                      help='Once everything is archived, keep the job running this many more '
                      'seconds and report the cores each of its processes uses with nothing '
                      'to read (default: %(default)s, not measured).')
  parser.add_argument('--stage_cpu', action='store_true',
                      help='The SDK workers time each DoFn, bundle and thread of theirs '
                      '(pipelines/stage_cpu.py) and the table adds their CPU per record.')
  args, extra = parser.parse_known_args(argv)
  extra = [a for a in extra if a != '--']
  phases = [p.strip() for p in args.streams.split(',') if p.strip()]
  unknown = set(phases) - set(STREAMS)
  if unknown:
    parser.error(f'unknown --streams {sorted(unknown)}')
  args.model_dir = os.path.abspath(args.model_dir)
  common.ensure_models(args.model_dir)
  result: dict[str, Any] = {
      'benchmark': 'throughput', 'machine': common.machine_info(),
      'settings': {'streams': phases, 'network_messages': args.network_messages,
                   'host_records': args.host_records, 'machines': args.machines,
                   'partitions': args.partitions, 'parallelism': args.parallelism,
                   'roll_seconds': args.roll_seconds, 'runner': 'FlinkRunner [local] (embedded)',
                   'extra_job_flags': extra,
                   'baseline_batch': args.baseline_batch, 'baseline_path': path_name(),
                   'own_broker': not args.bootstrap_servers, 'model_dir': args.model_dir,
                   'effective_job_flags': common.effective_job_flags(
                       [f'--parallelism={args.parallelism}', *extra])},
      'phases': {},
  }
  work_root = args.work_dir or tempfile.mkdtemp(prefix='bench-throughput-')
  os.makedirs(work_root, exist_ok=True)
  try:
    with kafka.broker_for(args.bootstrap_servers, args.partitions) as (bootstrap, broker_pid):
      for phase in phases:
        work = tempfile.mkdtemp(prefix=f'{phase}-', dir=work_root)
        topics = kafka.fresh_topics(f'tp_{phase}')
        kafka.make_topics(bootstrap, topics.values(), args.partitions)
        filled = prefill(bootstrap, phase, topics, network_messages=args.network_messages,
                         host_records=args.host_records, machines=args.machines, seed=args.seed)
        entry: dict[str, Any] = {'topics': topics, 'prefill': filled}
        if not args.no_baseline:
          entry['baseline'] = run_baseline(bootstrap, phase, topics, args.model_dir, work,
                                           args.timeout_s, args.baseline_batch)
        entry['job'] = run_job(bootstrap, broker_pid, phase, topics, filled['records'], args,
                               work, extra, stage_cpu_on=args.stage_cpu, idle_s=args.idle_s)
        base = (entry.get('baseline') or {}).get('records_per_s')
        steady = entry['job']['records_per_s_steady']
        entry['ratio'] = steady / base if base and steady else None
        result['phases'][phase] = entry
  finally:
    if not args.keep and not args.work_dir:
      shutil.rmtree(work_root, ignore_errors=True)
  return report.publish(args.results_dir, args.name, result, plot, _table(result))


if __name__ == '__main__':
  main()
