"""Benchmark (not a test): a chaos soak. The stream job runs on a standalone Flink cluster under
steady traffic while faults are injected at seeded random moments; nothing acknowledged may be
lost, and the consumer lag must come back to its pre-fault level soon after each fault.

    python -m benchmarks.chaos                                 # 20 min at 5,000 messages/s
    python -m benchmarks.chaos --duration_s 150 --rate 1000 --seed 2   # a short run

It starts its own broker (scripts/kafka.sh) and its own session cluster
(scripts/flink_cluster.sh: a JobManager and a TaskManager JVM, heartbeats 1 s / 6 s), submits
``pipelines.stream`` to the cluster with checkpointing, a restart strategy and retained
checkpoints (``--checkpoint_dir``), sends synthetic network traffic at ``--rate`` and injects,
each at a random moment of its own time slot (``--seed``), the faults named by ``--faults``:

  taskmanager_kill  kill -9 of the TaskManager JVM, a new TaskManager started 3 s later (as a
                    supervisor would); the job restarts from its last checkpoint
  broker_restart    the Kafka broker stopped and started again (same port, same data), 5 s down
  sdk_worker_kill   kill -9 of the busiest Python SDK worker process (the one using most CPU)
  cancel_resume     the job cancelled, then submitted again: it resumes from its retained
                    checkpoint (pipelines/runners.py)

Every ``--sample_s`` it records messages sent and acknowledged, the consumer lag (end offsets
minus the offsets the job commits at each checkpoint), rows archived, and the resident memory
of each part (TaskManager, JobManager, SDK workers, job server, broker, this process).

Per fault, **recovery** is the time from the injection to the first sample, after the fault
took effect (for the faults that fail the job: once Flink shows it restarted, or the resumed
job running), at which the Flink job is RUNNING, the lag is back to its pre-fault level (at
most 1.2 x the highest lag of the 30 s before the fault, and at least one second of traffic)
and the job commits offsets again (past where they were when the fault took effect). A fault is not injected before the previous one has recovered
(or run out of time) and ``--min_gap_s`` has passed; the delay is reported. The run lasts
``--duration_s`` or until the last fault has recovered, whichever is later.

At the end the traffic stops, the job drains, and every acknowledged uuid is looked up in the
archive: ``sent, acknowledged, archived, duplicates, lost``. Exit status 0 when lost = 0 and
every recovery took at most ``--recovery_limit_s`` (60 s), 1 otherwise. Writes the report to
``--output`` (default benchmarks/results/chaos.json) and a plot beside it (chaos.png).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Optional

from benchmarks.common import (DEFAULT_RESULTS, ArchiveCounter, MemorySampler,
                               archive_accounting, ensure_models, log, machine_info,
                               machine_line, pyplot, sdk_worker_pids)
from harness.flink import FlinkCluster, flink_job
from harness.kafka import PARTITIONS, Broker, Lag, make_topics
from harness.procs import cpu_ticks
from harness.scripts import ROOT
from harness.traffic import Traffic
from pipelines import stream
from pipelines.runners import newest_checkpoint

FAULTS = ('taskmanager_kill', 'broker_restart', 'sdk_worker_kill', 'cancel_resume')
PRE_FAULT_WINDOW_S = 30.0
TERMINAL = ('FAILED', 'CANCELED', 'FINISHED', 'SUSPENDED')
# The faults after which Flink must restart the job (or, after a cancel, run a new one).
FAILS_THE_JOB = ('taskmanager_kill', 'sdk_worker_kill', 'cancel_resume')


class Job:
  """The stream job submitted to the cluster (``stream.running``: its own job server), that
  can be cancelled and submitted again with the same arguments."""

  def __init__(self, argv: list[str]):
    self.argv = argv
    self.result = None
    self._stack: Optional[contextlib.ExitStack] = None

  def start(self) -> None:
    self._stack = contextlib.ExitStack()
    self.result = self._stack.enter_context(stream.running(self.argv))

  def cancel(self) -> None:
    if self._stack is not None:
      stack, self._stack = self._stack, None
      stack.close()


class Sampler(threading.Thread):
  """Every ``every_s``: sent, acknowledged, lag, committed offsets, archived rows, the Flink
  job's state and restart count, and RSS per role. Lag is None while the broker does not
  answer."""

  def __init__(self, started: float, every_s: float, traffic: Traffic, lag: Lag,
               archive: ArchiveCounter, memory: MemorySampler, flink_master: str,
               job_name: str):
    super().__init__(daemon=True)
    self.started, self.every_s = started, every_s
    self.traffic, self.lag, self.archive, self.memory = traffic, lag, archive, memory
    self.flink_master, self.job_name = flink_master, job_name
    self.samples: list[dict[str, Any]] = []
    self._lock = threading.Lock()
    self._stopping = threading.Event()

  def now(self) -> float:
    return time.monotonic() - self.started

  def sample(self) -> dict[str, Any]:
    t = self.now()
    try:
      committed, end = self.lag.offsets()
      lag: Optional[int] = end - committed
    except Exception:  # pylint: disable=broad-except
      committed, lag = None, None
    job = flink_job(self.flink_master, self.job_name)
    memory = self.memory.sample()
    return {'t': round(t, 1), 'sent': self.traffic.sink.sent,
            'acked': self.traffic.sink.acknowledged, 'lag': lag, 'committed': committed,
            'archived': self.archive.rows(), 'job': job.get('state'), 'jid': job.get('jid'),
            'restarts': job.get('restarts'), 'rss_mb': memory}

  def latest(self) -> Optional[dict[str, Any]]:
    with self._lock:
      return self.samples[-1] if self.samples else None

  def run(self) -> None:
    print(f'{"t (s)":>6} {"sent":>9} {"acked":>9} {"lag":>8} {"archived":>9} {"RSS MB":>7}  '
          'Flink job (restarts)', flush=True)
    while not self._stopping.is_set():
      s = self.sample()
      with self._lock:
        self.samples.append(s)
      lag = '-' if s['lag'] is None else s['lag']
      print(f'{s["t"]:>6.0f} {s["sent"]:>9} {s["acked"]:>9} {lag:>8} {s["archived"]:>9} '
            f'{sum(s["rss_mb"].values()):>7.0f}  {s["job"]} ({s["restarts"]})', flush=True)
      self._stopping.wait(max(0.0, self.every_s - (self.now() - s['t'])))

  def since(self, t: float) -> list[dict[str, Any]]:
    with self._lock:
      return [s for s in self.samples if s['t'] >= t]

  def stop(self) -> None:
    self._stopping.set()
    self.join(30)


def plan(kinds: list[str], rounds: int, start_s: float, end_s: float,
         rng: random.Random) -> list[dict[str, Any]]:
  """The faults in a seeded order, each at a random moment in the first half of a time slot
  of its own between ``start_s`` and ``end_s`` (so that each has at least half a slot to
  recover before the next)."""
  order = [k for _ in range(rounds) for k in rng.sample(kinds, len(kinds))]
  slot = (end_s - start_s) / len(order)
  return [{'kind': kind, 'planned_t': round(start_s + i * slot + rng.uniform(0, slot / 2), 1)}
          for i, kind in enumerate(order)]


class Chaos:
  """The parts a fault acts on, and the faults."""

  def __init__(self, args: argparse.Namespace, broker: Broker, cluster: FlinkCluster, job: Job,
               memory: MemorySampler, checkpoint_dir: str):
    self.args, self.broker, self.cluster, self.job = args, broker, cluster, job
    self.memory, self.checkpoint_dir = memory, checkpoint_dir
    self.orphans: list[int] = []  # SDK workers of a killed TaskManager, checked at the end

  def taskmanager_kill(self) -> dict[str, Any]:
    tm = self.cluster.pid('taskmanager')
    workers = sdk_worker_pids(tm) if tm else []
    self.cluster.kill_taskmanager()
    time.sleep(self.args.taskmanager_down_s)
    self.cluster.start_taskmanager()
    self.memory.add_root('flink_taskmanager_jvm', self.cluster.pid('taskmanager'))
    time.sleep(5)  # the killed TaskManager's SDK workers notice their control channel is gone
    left = [p for p in workers if os.path.exists(f'/proc/{p}')]
    self.orphans.extend(left)
    return {'killed_pid': tm, 'its_sdk_workers': len(workers),
            'its_sdk_workers_alive_5s_after_restart': len(left),
            'new_pid': self.cluster.pid('taskmanager')}

  def broker_restart(self) -> dict[str, Any]:
    old = self.broker.pid()
    self.broker.restart(self.args.broker_down_s)
    self.memory.add_root('kafka_broker', self.broker.pid())
    return {'old_pid': old, 'new_pid': self.broker.pid(), 'down_s': self.args.broker_down_s}

  def sdk_worker_kill(self) -> dict[str, Any]:
    tm = self.cluster.pid('taskmanager')
    workers = sdk_worker_pids(tm) if tm else []
    if not workers:
      raise RuntimeError('no Python SDK worker process under the TaskManager')
    # The busiest one: Flink gives the job's Python stages to some of the workers only, and
    # the kill of an idle one goes unnoticed until the next restart. Idle workers use a little
    # CPU too (gRPC polling), so "used any CPU" picked idle ones on a loaded machine.
    before = {p: cpu_ticks(p) for p in workers}
    time.sleep(3)
    used = {p: cpu_ticks(p) - t for p, t in before.items()}
    victim = max(used, key=used.get)
    os.kill(victim, signal.SIGKILL)
    return {'killed_pid': victim, 'of_workers': len(workers),
            'its_cpu_ticks_in_3s': used[victim],
            'cpu_ticks_of_the_others': sorted(t for p, t in used.items() if p != victim)}

  def cancel_resume(self) -> dict[str, Any]:
    t0 = time.monotonic()
    self.job.cancel()
    cancelled_s = time.monotonic() - t0
    resumed_from = newest_checkpoint(self.checkpoint_dir)
    if not resumed_from:
      raise RuntimeError(f'the cancelled job left no retained checkpoint in {self.checkpoint_dir}')
    self.job.start()
    return {'cancel_s': round(cancelled_s, 1),
            'resubmit_s': round(time.monotonic() - t0 - cancelled_s, 1),
            'resumed_from': os.path.relpath(resumed_from, self.checkpoint_dir)}


def pre_fault(fault: dict[str, Any], sampler: Sampler, rate: float, quiet_since: float) -> None:
  """The lag level before the fault, from the samples of the last 30 s that came after
  ``quiet_since`` (the previous fault's recovery), and the threshold it must get back to."""
  before = [s for s in sampler.since(max(fault['t'] - PRE_FAULT_WINDOW_S, quiet_since))
            if s['lag'] is not None]
  last = sampler.latest() or {}
  fault['pre_fault_lag'] = pre = max((s['lag'] for s in before), default=0)
  fault['threshold'] = max(int(1.2 * pre), int(rate))
  fault['restarts_before'] = last.get('restarts')
  fault['jid_before'] = last.get('jid')


def wait_restarted(fault: dict[str, Any], sampler: Sampler, give_up_s: float) -> None:
  """For faults that fail the job: waits until Flink shows it restarting (numRestarts up, or
  a new job after a resubmission); sets ``fault['restart_seen_s']`` (None if never)."""
  fault['restart_seen_s'] = None
  deadline = fault['t'] + give_up_s
  while sampler.now() < deadline:
    for s in sampler.since(fault['t']):
      if s['jid'] is None:
        continue
      if s['jid'] != fault['jid_before'] or (
          s['restarts'] is not None and fault['restarts_before'] is not None
          and s['restarts'] > fault['restarts_before']):
        fault['restart_seen_s'] = round(s['t'] - fault['t'], 1)
        return
    time.sleep(0.5)


def wait_recovered(fault: dict[str, Any], sampler: Sampler, limit_s: float,
                   give_up_s: float) -> None:
  """Fills in ``fault['recovery_s']``: from the injection to the first sample, after the fault
  took effect, with the job RUNNING, the lag at most ``fault['threshold']`` and the committed
  offsets past where they were when the fault took effect (so that a checkpoint completed
  since). None if that did not happen within ``give_up_s`` of the injection."""
  effect = fault['t_end']
  if fault.get('restart_seen_s') is not None:
    effect = max(effect, fault['t'] + fault['restart_seen_s'])
  at_effect = [s['committed'] for s in sampler.since(fault['t'])
               if s['t'] <= effect and s['committed'] is not None]
  committed = max(at_effect, default=0)
  fault['recovery_s'] = None
  deadline = fault['t'] + give_up_s
  while sampler.now() < deadline:
    for s in sampler.since(effect):
      if (s['job'] == 'RUNNING' and s['lag'] is not None and s['lag'] <= fault['threshold']
          and s['committed'] > committed):
        fault['recovery_s'] = round(s['t'] - fault['t'], 1)
        fault['ok'] = fault['recovery_s'] <= limit_s
        return
    time.sleep(1)
  fault['ok'] = False


def drain(sampler: Sampler, archive: ArchiveCounter, traffic: Traffic, timeout_s: float) -> None:
  """Waits until the job has read everything (lag 0) and archived at least one row per
  acknowledged message, then one more roll, or until ``timeout_s``."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    last = sampler.since(sampler.now() - 3 * sampler.every_s)
    if last and last[-1]['lag'] == 0 and archive.rows() >= traffic.sink.acknowledged:
      break
    time.sleep(2)


def plot(report: dict[str, Any], path: str) -> None:
  plt = pyplot()
  samples = report['samples']
  t = [s['t'] for s in samples]
  fig, (ax_lag, ax_mem) = plt.subplots(2, 1, figsize=(13, 7), sharex=True)
  ax_lag.plot(t, [s['lag'] if s['lag'] is not None else float('nan') for s in samples],
              color='tab:blue', lw=1)
  ax_lag.set_ylabel('consumer lag (messages)')
  roles = sorted({r for s in samples for r in s['rss_mb']})
  for role in roles:
    ax_mem.plot(t, [s['rss_mb'].get(role, 0) for s in samples], lw=1, label=role)
  ax_mem.plot(t, [sum(s['rss_mb'].values()) for s in samples], color='black', lw=1.5,
              label='total')
  ax_mem.set_ylabel('RSS (MB)')
  ax_mem.set_xlabel('time since traffic start (s)')
  ax_mem.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
  for fault in report['faults']:
    for ax in (ax_lag, ax_mem):
      ax.axvline(fault['t'], color='tab:red', lw=1, ls='--')
      if fault.get('recovery_s') is not None:
        ax.axvspan(fault['t'], fault['t'] + fault['recovery_s'], color='tab:red', alpha=0.08)
    ax_lag.annotate(fault['kind'], (fault['t'], 1.0), xycoords=('data', 'axes fraction'),
                    rotation=90, va='top', ha='right', fontsize=8, color='tab:red')
  a = report['accounting']
  fig.suptitle(f"chaos soak: {report['rate']:.0f} msg/s for {report['duration_s']:.0f} s; "
               f"acknowledged {a['acknowledged']:,}, lost {a['lost']}, "
               f"duplicates {a['duplicates']:,}", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def chaos(args: argparse.Namespace) -> dict[str, Any]:
  rng = random.Random(args.seed)
  kinds = [k.strip() for k in args.faults.split(',') if k.strip()]
  unknown = set(kinds) - set(FAULTS)
  if unknown or not kinds:
    raise SystemExit(f'--faults: unknown {sorted(unknown)}; known: {",".join(FAULTS)}')
  ensure_models(args.model_dir)
  work = args.work_dir or tempfile.mkdtemp(prefix='chaos-')
  output, checkpoint_dir = os.path.join(work, 'out'), os.path.join(work, 'checkpoints')
  suffix = uuid.uuid4().hex[:8]
  topics = {s: f'chaos_{s}_{suffix}' for s in ('network', 'process', 'memory')}
  group = f'chaos-{suffix}'
  machine = machine_info()
  log(machine_line(machine))
  with contextlib.ExitStack() as stack:
    broker = Broker(PARTITIONS).start()
    stack.callback(broker.stop)
    cluster = FlinkCluster(os.path.join(work, 'flink'), slots=args.parallelism).start()
    stack.callback(cluster.stop)
    make_topics(broker.bootstrap, topics.values(), PARTITIONS)
    argv = ['--runner=FlinkRunner', f'--flink_master={cluster.master}',
            f'--parallelism={args.parallelism}', f'--bootstrap_servers={broker.bootstrap}',
            *[f'--{s}_topic={t}' for s, t in topics.items()], '--alerts_topic=',
            f'--output={output}', f'--model_dir={args.model_dir}',
            f'--roll_seconds={args.roll_seconds}', '--model_refresh_s=0',
            f'--checkpointing_interval={args.checkpointing_interval}',
            f'--checkpoint_dir={checkpoint_dir}',
            f'--number_of_execution_retries={args.number_of_execution_retries}',
            f'--execution_retry_delay={args.execution_retry_delay}',
            f'--consumer_group={group}', f'--job_name=chaos-{suffix}', *args.job_args]
    memory = MemorySampler({'chaos_python': os.getpid(),
                            'flink_jobmanager_jvm': cluster.pid('jobmanager'),
                            'flink_taskmanager_jvm': cluster.pid('taskmanager'),
                            'kafka_broker': broker.pid()})
    job = Job(argv)
    traffic = stack.enter_context(Traffic(broker.bootstrap, topics, None, args.rate, seed=args.seed))
    lag = Lag(broker.bootstrap, topics['network'], group, PARTITIONS)
    stack.callback(lag.close)
    archive = ArchiveCounter(os.path.join(output, 'archive', 'network'))
    log('submitting the stream job')
    job.start()
    stack.callback(job.cancel)
    started = time.monotonic()
    traffic.start()
    sampler = Sampler(started, args.sample_s, traffic, lag, archive, memory, cluster.master,
                      f'chaos-{suffix}')
    sampler.start()
    stack.callback(sampler.stop)
    # Ready: rows archived, and the backlog of the start-up read (the lag at most what two
    # checkpoint intervals of traffic leave uncommitted).
    settled = 2 * args.rate * args.checkpointing_interval / 1000
    while True:
      last = sampler.latest() or {}
      if archive.rows() and last.get('lag') is not None and last['lag'] <= settled:
        break
      if sampler.now() > args.startup_timeout_s:
        raise RuntimeError(f'the job did not catch up within {args.startup_timeout_s:.0f} s '
                           f'(archived {archive.rows()}, lag {last.get("lag")})')
      time.sleep(1)
    ready_s = sampler.now()
    log(f'rows archived and lag settled {ready_s:.1f} s after the traffic started')
    first = ready_s + args.warmup_s
    faults = plan(kinds, args.rounds, first,
                  max(args.duration_s - args.recovery_limit_s, first + len(kinds) * args.rounds),
                  rng)
    log('faults planned: ' + ', '.join(f'{f["kind"]} at {f["planned_t"]:.0f} s' for f in faults))
    injector = Chaos(args, broker, cluster, job, memory, checkpoint_dir)
    quiet_since = ready_s
    for fault in faults:
      # Never on top of the previous fault: after its recovery, at least --min_gap_s of
      # samples give the next one its pre-fault level.
      wait_s = max(fault['planned_t'], quiet_since + args.min_gap_s) - sampler.now()
      if wait_s > 0:
        time.sleep(wait_s)
      fault['t'] = round(sampler.now(), 1)
      fault['delayed_s'] = round(max(0.0, fault['t'] - fault['planned_t']), 1)
      pre_fault(fault, sampler, args.rate, quiet_since)
      log(f'fault: {fault["kind"]}')
      try:
        fault['details'] = getattr(injector, fault['kind'])()
      except Exception as e:  # pylint: disable=broad-except
        fault['error'] = f'{type(e).__name__}: {e}'
        log(f'fault {fault["kind"]} could not be injected: {fault["error"]}')
      fault['t_end'] = round(sampler.now(), 1)
      give_up_s = 3 * args.recovery_limit_s
      if fault['kind'] in FAILS_THE_JOB:
        wait_restarted(fault, sampler, give_up_s)
      wait_recovered(fault, sampler, args.recovery_limit_s, give_up_s)
      recovered = fault['recovery_s'] if fault['recovery_s'] is not None else give_up_s
      quiet_since = fault['t'] + recovered
      log(f'{fault["kind"]} at {fault["t"]:.0f} s: '
          + (f'restart seen after {fault["restart_seen_s"]} s; '
             if fault['kind'] in FAILS_THE_JOB else '')
          + f'lag back to <= {fault["threshold"]:,} (pre-fault max {fault["pre_fault_lag"]:,}) '
          f'after {fault["recovery_s"] if fault["recovery_s"] is not None else "never"} s'
          f'{"" if fault["ok"] else " (over the limit)"}')
      state = (sampler.latest() or {}).get('job')
      if state in TERMINAL:
        log(f'the Flink job ended ({state}): no further faults')
        break
    if sampler.now() < args.duration_s:
      time.sleep(args.duration_s - sampler.now())
    duration_s = sampler.now()
    traffic.stop_sending()
    stats = traffic.finish(timeout_s=300)
    failures = (f'; failed deliveries by error: {dict(traffic.sink.errors)}'
                if stats['failed'] else '')
    log(f'traffic stopped: {stats}{failures}; draining')
    drain(sampler, archive, traffic, args.drain_timeout_s)
    for attempt in range(4):
      # Read and checkpointed is not yet written: the last rows wait for their roll.
      time.sleep(args.roll_seconds + 5)
      accounting = {'sent': stats['sent'], 'acknowledged': stats['acknowledged'],
                    **archive_accounting(os.path.join(output, 'archive', 'network'),
                                         traffic.sink.acked_uuids)}
      if not accounting['lost']:
        break
      log(f'accounting {attempt + 1}: {accounting["lost"]} not archived yet')
    sampler.stop()
    orphans = [p for p in injector.orphans if os.path.exists(f'/proc/{p}')]
    for pid in orphans:  # SDK workers our killed TaskManager left behind: ours to end
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
  print('[accounting] chaos: ' + ', '.join(f'{k} {v}' for k, v in accounting.items()), flush=True)
  for f in faults:
    print(f'[fault] {f["kind"]} at {f.get("t", 0):.0f} s: '
          + (f'recovered in {f["recovery_s"]} s' if f.get('recovery_s') is not None
             else 'did not recover') + ('' if f.get('ok') else ' (over the limit)')
          + (f'; error {f["error"]}' if f.get('error') else ''), flush=True)
  ok = (accounting['lost'] == 0 and all(f.get('ok') for f in faults)
        and len([f for f in faults if 't' in f]) == len(faults))
  return {
      'rate': args.rate, 'duration_s': round(duration_s, 1), 'seed': args.seed,
      'faults_requested': kinds, 'rounds': args.rounds,
      'recovery_limit_s': args.recovery_limit_s, 'ready_s': round(ready_s, 1),
      'settings': {'parallelism': args.parallelism, 'roll_seconds': args.roll_seconds,
                   'checkpointing_interval_ms': args.checkpointing_interval,
                   'number_of_execution_retries': args.number_of_execution_retries,
                   'execution_retry_delay_ms': args.execution_retry_delay,
                   'taskmanager_down_s': args.taskmanager_down_s,
                   'broker_down_s': args.broker_down_s, 'sample_s': args.sample_s,
                   'cluster': {k: v for k, v in cluster.settings.items()
                               if k.startswith(('FLINK_TM', 'FLINK_HEARTBEAT'))},
                   'job_args': argv},
      'machine': machine, 'faults': faults, 'accounting': accounting,
      'orphaned_sdk_workers_at_end': len(orphans),
      'peak_rss_mb': {r: round(kb / 1024) for r, kb in sorted(memory.peak_rss_kb.items())},
      'samples': sampler.samples, 'ok': ok,
  }


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.chaos', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--duration_s', type=float, default=1200,
                      help='traffic time (default 1200)')
  parser.add_argument('--rate', type=float, default=5000, help='messages/s (default 5000)')
  parser.add_argument('--seed', type=int, default=1, help='fault order and moments (default 1)')
  parser.add_argument('--faults', default=','.join(FAULTS),
                      help=f'comma-separated kinds (default all: {",".join(FAULTS)})')
  parser.add_argument('--rounds', type=int, default=1, help='each kind this many times (default 1)')
  parser.add_argument('--output', default=os.path.join(DEFAULT_RESULTS, 'chaos.json'),
                      help='the report (JSON); the plot goes beside it (.png)')
  parser.add_argument('--recovery_limit_s', type=float, default=60)
  parser.add_argument('--warmup_s', type=float, default=60,
                      help='no fault before this many s after the job caught up with the '
                      'traffic at its start (default 60)')
  parser.add_argument('--min_gap_s', type=float, default=20,
                      help='at least this long between a recovery and the next fault (default 20)')
  parser.add_argument('--sample_s', type=float, default=2)
  parser.add_argument('--model_dir', default=os.path.join(ROOT, 'models'))
  parser.add_argument('--work_dir', help="the job's output, checkpoints and cluster logs "
                      '(default: a temporary folder, kept)')
  parser.add_argument('--parallelism', type=int, default=2)
  parser.add_argument('--roll_seconds', type=int, default=10)
  parser.add_argument('--checkpointing_interval', type=int, default=5000, help='ms')
  parser.add_argument('--number_of_execution_retries', type=int, default=1000)
  parser.add_argument('--execution_retry_delay', type=int, default=2000, help='ms')
  parser.add_argument('--taskmanager_down_s', type=float, default=3)
  parser.add_argument('--broker_down_s', type=float, default=5)
  parser.add_argument('--startup_timeout_s', type=float, default=300)
  parser.add_argument('--drain_timeout_s', type=float, default=300)
  parser.add_argument('job_args', nargs='*', help='after --: passed to pipelines.stream')
  args = parser.parse_args(argv)
  report = chaos(args)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1, default=str)
  png = os.path.splitext(args.output)[0] + '.png'
  plot(report, png)
  log(f'wrote {args.output} and {png}')
  return 0 if report['ok'] else 1


if __name__ == '__main__':
  sys.exit(main())
