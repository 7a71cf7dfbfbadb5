"""What the throughput and latency benchmarks share beyond the harness (brokers, clusters,
topics and processes are in ``harness/``): the stream job as a subprocess, archive polling,
memory sampling, the machine, and the result files.

Nothing here is a test; the benchmarks print a table, write ``<name>.json`` and ``<name>.png``
under ``--results_dir`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.procs import children, cmdline, cpu_ticks, descendants, jvm_thread_ticks, status_kb
from harness.scripts import ROOT
from model import registry
from pipelines import runners
from pipelines import stream
from transforms import jvm

DEFAULT_RESULTS = os.path.join(ROOT, 'benchmarks', 'results')


def log(text: str) -> None:
  print(f'[{time.strftime("%H:%M:%S")}] {text}', file=sys.stderr, flush=True)


# ---- the machine ------------------------------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str:
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    return ((out.stdout or '') + (out.stderr or '')).strip().splitlines()[0]
  except (OSError, IndexError, subprocess.TimeoutExpired):
    return 'unknown'


def _python_loop_ms(n: int = 1_000_000) -> float:
  """The median of five runs of a fixed pure-Python loop: the speed of one core for code like
  the job's own Python, as this machine gives it now (a median, not the best run: a host
  whose cores are shared makes the runs differ, and the job feels that too)."""
  runs = []
  for _ in range(5):
    started = time.perf_counter()
    total = 0
    for i in range(n):
      total += i
    runs.append(time.perf_counter() - started)
  return round(statistics.median(runs) * 1000, 1)


def _pipe_round_trip_us(trips: int = 2000) -> Optional[float]:
  """The median round trip of one byte between two processes over pipes: a wake-up of another
  process and back, which the job pays at every Fn API and gRPC hand-off and its reference
  (a single process) does not; None where os.fork is missing."""
  if not hasattr(os, 'fork'):
    return None
  child_in, parent_out = os.pipe()
  parent_in, child_out = os.pipe()
  pid = os.fork()
  if pid == 0:  # the echoing child: never returns into the benchmark
    try:
      os.close(parent_out)  # so that the parent's close ends the child's read
      os.close(parent_in)
      while os.read(child_in, 1):
        os.write(child_out, b'x')
    finally:
      os._exit(0)  # pylint: disable=protected-access
  os.close(child_in)
  os.close(child_out)
  times = []
  try:
    for _ in range(trips):
      started = time.perf_counter()
      os.write(parent_out, b'x')
      os.read(parent_in, 1)
      times.append(time.perf_counter() - started)
  finally:
    os.close(parent_out)
    os.close(parent_in)
    os.waitpid(pid, 0)
  return round(statistics.median(times) * 1e6, 1)


def machine_speed() -> dict[str, Optional[float]]:
  """Two calibration figures measured at the benchmark's start, so that absolute figures of
  different days (and machines) can be told apart: one core's Python speed, and the cost of
  waking another process (benchmarks/README.md, "The machine")."""
  return {'python_loop_ms': _python_loop_ms(), 'pipe_round_trip_us': _pipe_round_trip_us()}


def machine_info() -> dict[str, Any]:
  """Cores, CPU model, RAM, load, calibration figures and the versions of everything
  measured."""
  cpu = 'unknown'
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  mem_gb = None
  with contextlib.suppress(OSError, ValueError):
    with open('/proc/meminfo', encoding='utf-8') as f:
      mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
  versions = {'python': platform.python_version()}
  for name in ('apache_beam', 'pyarrow', 'sklearn', 'numpy', 'pandas', 'confluent_kafka'):
    with contextlib.suppress(Exception):
      module = __import__(name)
      versions[name] = getattr(module, '__version__', None) or str(module.version())
  versions.update({'beam_java': jvm.JAVA_BEAM_VERSION, 'flink': '1.19.3',
                   'kafka_broker': '3.9.2', 'java': _first_line(['java', '-version'])})
  git = _first_line(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])
  dirty = subprocess.run(['git', '-C', ROOT, 'status', '--porcelain', '--untracked-files=no'],
                         capture_output=True, text=True, check=False).stdout.strip()
  if git.startswith('fatal') and os.environ.get('BENCH_GIT_REV'):
    # A `git archive` export of a commit (a clean copy beside a busy working tree).
    git, dirty = os.environ['BENCH_GIT_REV'] + ' (exported)', ''
  return {
      'cores': os.cpu_count(), 'cpu': cpu, 'ram_gb': mem_gb,
      'load_avg_at_start': [round(x, 2) for x in os.getloadavg()], 'speed': machine_speed(),
      'os': platform.platform(), 'versions': versions,
      'git': git + (' (working tree modified)' if dirty else ''),
      'when_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S'),
  }


def machine_line(m: dict[str, Any]) -> str:
  v = m['versions']
  speed = m.get('speed') or {}
  return (f"{m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, load {m['load_avg_at_start']} "
          f"at start, speed: Python loop {speed.get('python_loop_ms')} ms, pipe round trip "
          f"{speed.get('pipe_round_trip_us')} us; Python {v.get('python')}, "
          f"Beam {v.get('apache_beam')} (Java {v.get('beam_java')}), Flink {v.get('flink')}, "
          f"Kafka {v.get('kafka_broker')}; git {m['git']}; {m['when_utc']} UTC")


# ---- outputs ----------------------------------------------------------------------------------


class ArchiveCounter:
  """Rows in the finished Parquet files under a folder (footers only; each file read once)."""

  def __init__(self, folder: str):
    self.folder = folder
    self._seen: dict[str, int] = {}

  def rows(self) -> int:
    for root, _dirs, files in os.walk(self.folder):
      for name in files:
        if name.startswith('.') or not name.endswith('.parquet'):
          continue
        path = os.path.join(root, name)
        if path not in self._seen:
          try:
            self._seen[path] = pq.ParquetFile(path).metadata.num_rows
          except (OSError, ValueError):
            continue  # not there any more, or not readable yet: next poll
    return sum(self._seen.values())

  def files(self) -> int:
    return len(self._seen)


def archive_accounting(archive_dir: str, acked_uuids: Sequence[str]) -> dict[str, int]:
  """Acknowledged uuids against the ``uuid`` column of every finished Parquet file under
  ``archive_dir``, in Arrow (millions of uuids, no Python set): ``archived`` (acknowledged and
  archived), ``duplicates`` (rows beyond one per uuid: a replay after a restart rewrites
  records; removable by uuid), ``lost`` (acknowledged, never archived) and ``unexpected``
  (archived, never acknowledged)."""
  columns = []
  for root, _dirs, files in os.walk(archive_dir):
    for name in files:
      if name.endswith('.parquet') and not name.startswith('.'):
        columns.extend(pq.read_table(os.path.join(root, name), columns=['uuid'])
                       .column('uuid').chunks)
  rows = pa.chunked_array(columns, pa.string()) if columns else pa.chunked_array([], pa.string())
  archived = pc.unique(rows)
  acked = pc.unique(pa.array(acked_uuids, pa.string()))
  found = pc.sum(pc.is_in(acked, value_set=archived)).as_py() or 0
  known = pc.sum(pc.is_in(archived, value_set=acked)).as_py() or 0
  return {'archived': found, 'duplicates': len(rows) - len(archived),
          'lost': len(acked) - found, 'unexpected': len(archived) - known}


def steady_rate(samples: Sequence[tuple[float, int]], total: int,
                low: float = 0.1, high: float = 0.9) -> Optional[float]:
  """Rows/s in the steady part of a run: the least-squares slope of (t, rows) over the samples
  with rows between ``low`` and ``high`` of ``total``. With too few samples there (a short run
  against the 1 s file rolls), the slope between the first and the last change of the row
  count (the first file's rows, written before it, are left out). None if neither exists."""
  if total <= 0:
    return None
  band = [(t, r) for t, r in samples if low * total <= r <= high * total]
  if len(band) >= 3 and band[-1][0] > band[0][0]:
    n = len(band)
    mt = sum(t for t, _ in band) / n
    mr = sum(r for _, r in band) / n
    var = sum((t - mt) ** 2 for t, _ in band)
    return sum((t - mt) * (r - mr) for t, r in band) / var
  changes = [(t, r) for (t, r), (_, before) in zip(samples[1:], samples[:-1]) if r != before]
  if len(changes) >= 2 and changes[-1][0] > changes[0][0]:
    return (changes[-1][1] - changes[0][1]) / (changes[-1][0] - changes[0][0])
  return None


def steady_band(samples: Sequence[tuple[float, int]], low: float = 0.1, high: float = 0.9
                ) -> Optional[tuple[tuple[float, int], tuple[float, int]]]:
  """The first samples with ``low`` and with ``high`` of the run's rows: the steady part of a
  run, apart from its start and its last records. None when too few samples fall in it."""
  total = samples[-1][1] if samples else 0
  band = [(t, r) for t, r in samples if low * total <= r <= high * total]
  if len(band) < 2 or band[-1][1] <= band[0][1]:
    return None
  return band[0], band[-1]


def steady_cpu(sampler: 'MemorySampler', samples: Sequence[tuple[float, int]], started: float,
               exclude: Sequence[str] = ('kafka_broker',), low: float = 0.1,
               high: float = 0.9) -> Optional[dict[str, Any]]:
  """CPU microseconds per archived record in the steady part of a run (between the first
  samples with ``low`` and ``high`` of the rows), per process role and per JVM thread kind
  (``<role> jit``, ``<role> gc``, ``<role> work``): where the time goes once the job runs, apart
  from its start. ``samples`` are (seconds since ``started``, rows); ``started`` is the run's
  ``time.monotonic()`` at its start. None when the run archived too little for a window."""
  band = steady_band(samples, low, high)
  if band is None:
    return None
  (t1, r1), (t2, r2) = band
  cpu = {k: v for k, v in sampler.cpu_between(started + t1, started + t2).items()
         if k.split(' ')[0] not in exclude}
  roles = [k for k in cpu if ' ' not in k]
  per_record = {k: round(v / (r2 - r1) * 1e6, 1) for k, v in cpu.items() if v > 0}
  per_record['total'] = round(sum(cpu[k] for k in roles) / (r2 - r1) * 1e6, 1)
  return {'records': r2 - r1, 'seconds': round(t2 - t1, 2),
          'cores': round(sum(cpu[k] for k in roles) / (t2 - t1), 2), 'us_per_record': per_record}


def steady_cpu_line(steady: Optional[dict[str, Any]]) -> str:
  """``steady_cpu``'s figures in one line: each role, its JVM's JIT and GC threads apart."""
  if not steady:
    return 'n/a'
  us = steady['us_per_record']
  return f"{us['total']:.1f} us/record on {steady['cores']:.2f} cores: " + roles_line(us, 1)


def roles_line(values: dict[str, float], digits: int) -> str:
  """``{role: x, '<role> jit': y, ...}`` -> "role x (jit y, gc z), ...", largest first."""
  parts = []
  for role in sorted((k for k in values if ' ' not in k and k != 'total'),
                     key=lambda k: -values[k]):
    extra = [f'{kind} {values[f"{role} {kind}"]:.{digits}f}' for kind in ('jit', 'gc')
             if values.get(f'{role} {kind}')]
    parts.append(f'{role} {values[role]:.{digits}f}' + (f' ({", ".join(extra)})' if extra else ''))
  return ', '.join(parts)


# ---- processes and memory ---------------------------------------------------------------------


def job_server_pids() -> list[int]:
  """Our child JVMs running the Flink job server (the embedded Flink lives there)."""
  return [pid for pid in children(os.getpid()) if 'job-server' in cmdline(pid)]


def sdk_worker_pids(root: int) -> list[int]:
  """The Python SDK worker processes (PROCESS environment, scripts/sdk_worker.sh) below
  ``root``: a TaskManager, or a job server with the embedded Flink."""
  return sorted(p for p in descendants(root) if role_of(cmdline(p)) == 'python_sdk_worker')


def role_of(cmd: str) -> str:
  if ' --version' in cmd or ' pip freeze' in cmd:
    return 'short_lived_helper'  # Beam's environment probes at submission (java, docker, pip)
  if 'kafka.Kafka' in cmd:
    return 'kafka_broker'
  if 'pipelines.fork_server serve' in cmd:  # pipelines/fork_server.py: the forked workers'
    return 'sdk_worker_fork_server'           # parent, which has preloaded their imports
  if 'pipelines.fork_server' in cmd:  # scripts/sdk_worker.sh as a forked worker's launcher
    return 'sdk_worker_launcher'
  if 'sdk_worker' in cmd:  # PROCESS environment: scripts/sdk_worker.sh, sdk_worker_main
    return 'python_sdk_worker'
  if 'java' in cmd.split(' ', 1)[0] or ' -jar ' in cmd or '-cp ' in cmd:
    if 'job-server' in cmd:
      return 'flink_job_server_jvm'
    if 'expansion-service' in cmd:
      return 'expansion_service_jvm'
    if 'org.apache.spark.deploy.SparkSubmit' in cmd:  # the peer's driver JVM (local[2])
      return 'spark_jvm'
    return 'other_jvm'
  if 'pyspark.daemon' in cmd:  # the peer's Python workers (mapInPandas)
    return 'spark_python_worker'
  if 'python' in cmd.split(' ', 1)[0]:
    return 'python'
  return 'other'


class MemorySampler:
  """Samples VmRSS / VmHWM of process trees every ``every_s`` in a thread.

  ``roots``: ``{label: pid}``; every descendant is sampled too, under the role its command line
  shows (a root's own role is its label). Per role it keeps the peak of the summed RSS, the
  largest VmHWM seen and the processes seen; per process its CPU time at the last sample
  (``cpu_s``: their sum, less what a process used after its last sample), and at every sample
  the CPU time so far per role, a JVM's also per kind of thread (:meth:`cpu_between`).
  """

  def __init__(self, roots: dict[str, int], every_s: float = 0.5):
    self.roots = {k: v for k, v in roots.items() if v}
    self.every_s = every_s
    self.peak_rss_kb: dict[str, int] = {}
    self.peak_hwm_kb: dict[str, int] = {}
    self.processes: dict[int, dict[str, Any]] = {}
    self._root_cmds: set[str] = set()
    self._parents: dict[int, int] = {}
    self.cpu_timeline: list[tuple[float, dict[str, int]]] = []
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def add_root(self, label: str, pid: Optional[int]) -> None:
    if pid:
      self.roots[label] = pid

  def _tree(self) -> list[tuple[int, str]]:
    seen, out = set(), []
    stack = [(pid, label) for label, pid in self.roots.items()]
    while stack:
      pid, label = stack.pop()
      if pid in seen:
        continue
      seen.add(pid)
      out.append((pid, label))
      for child in children(pid):
        self._parents[child] = pid
        stack.append((child, None))
    return out

  def sample(self) -> dict[str, float]:
    """Samples once; returns the RSS summed per role now, in MB."""
    totals: dict[str, int] = {}
    if not self._root_cmds:
      self._root_cmds = {cmdline(pid) for pid in self.roots.values()} - {''}
    for pid, label in self._tree():
      info = self.processes.get(pid)
      if info is None:
        cmd = cmdline(pid)
        if not cmd:
          continue
        role = label or role_of(cmd)
        if label is None and role == 'python':
          # A child showing its parent's command line is a fork about to exec (Beam's
          # environment probes): its RSS is the parent's shared pages, not new memory.
          role = 'python_child' if cmd not in self._root_cmds else 'fork_before_exec'
        elif label is None and role.endswith('jvm') and cmd == cmdline(self._parents.get(pid, 0)):
          # A JVM forks only to exec (Hadoop's local file system runs chmod and readlink so):
          # for an instant the child is a copy of its parent.
          role = 'fork_before_exec'
        info = self.processes[pid] = {'role': role, 'cmd': cmd[:160]}
      elif label and info['role'] != label:
        # Seen first below its launcher script (a restarted TaskManager), then made a root.
        info['role'] = label
      elif info['cmd'].startswith('bash ') or info['role'] == 'sdk_worker_fork_server':
        # A script that exec()s, or a worker forked from the fork server but seen before it
        # took its own command line: show what it became.
        cmd = cmdline(pid)
        if cmd and cmd[:160] != info['cmd'] and not cmd.startswith('bash '):
          info['cmd'] = cmd[:160]
          if pid not in self.roots.values():
            info['role'] = role_of(cmd)
      status = status_kb(pid)
      if not status:
        continue
      role = info['role']
      totals[role] = totals.get(role, 0) + status.get('VmRSS', 0)
      self.peak_hwm_kb[role] = max(self.peak_hwm_kb.get(role, 0), status.get('VmHWM', 0))
      info['hwm_kb'] = max(info.get('hwm_kb', 0), status.get('VmHWM', 0))
      info['cpu_ticks'] = max(info.get('cpu_ticks', 0), cpu_ticks(pid))
      if role.endswith('_jvm'):
        kinds = info.setdefault('jvm_ticks', {})
        for kind, ticks in jvm_thread_ticks(pid).items():
          kinds[kind] = max(kinds.get(kind, 0), ticks)
    for role, kb in totals.items():
      self.peak_rss_kb[role] = max(self.peak_rss_kb.get(role, 0), kb)
    self.cpu_timeline.append((time.monotonic(), self._cpu_so_far()))
    return {role: round(kb / 1024, 1) for role, kb in sorted(totals.items())}

  def _cpu_so_far(self) -> dict[str, int]:
    """Clock ticks so far per role, and per ``<jvm role> <thread kind>``."""
    out: dict[str, int] = {}
    for info in self.processes.values():
      role = info['role']
      out[role] = out.get(role, 0) + info.get('cpu_ticks', 0)
      for kind, ticks in info.get('jvm_ticks', {}).items():
        out[f'{role} {kind}'] = out.get(f'{role} {kind}', 0) + ticks
    return out

  def cpu_between(self, start: float, end: float) -> dict[str, float]:
    """CPU seconds per role (and per JVM thread kind) between the samples nearest to the
    monotonic times ``start`` and ``end``."""
    if not self.cpu_timeline:
      return {}
    def nearest(t):
      return min(self.cpu_timeline, key=lambda sample: abs(sample[0] - t))[1]
    first, last = nearest(start), nearest(end)
    hz = os.sysconf('SC_CLK_TCK')
    return {key: (ticks - first.get(key, 0)) / hz for key, ticks in sorted(last.items())}

  def _run(self) -> None:
    while not self._stop.is_set():
      self.sample()
      self._stop.wait(self.every_s)

  def __enter__(self) -> 'MemorySampler':
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join(5)

  def sdk_workers(self) -> int:
    """Python SDK worker processes seen (PROCESS environment); 0 with LOOPBACK, whose
    harness runs as threads of the launching process."""
    return sum(1 for i in self.processes.values()
               if i['role'] == 'python_sdk_worker' and i.get('hwm_kb', 0) > 0)

  def cpu_s(self, exclude: Sequence[str] = ('kafka_broker',)) -> float:
    """CPU seconds (user + system) of the sampled processes, less the roles in ``exclude``."""
    ticks = sum(i.get('cpu_ticks', 0) for i in self.processes.values()
                if i['role'] not in exclude)
    return ticks / os.sysconf('SC_CLK_TCK')

  def result(self) -> dict[str, Any]:
    return {
        'python_sdk_worker_processes': self.sdk_workers(), 'cpu_s': round(self.cpu_s(), 1),
        'peak_rss_mb': {r: round(kb / 1024) for r, kb in sorted(self.peak_rss_kb.items())},
        'peak_hwm_mb': {r: round(kb / 1024) for r, kb in sorted(self.peak_hwm_kb.items())},
        'processes': [{'pid': p, 'role': i['role'], 'hwm_mb': round(i.get('hwm_kb', 0) / 1024),
                       'cmd': i['cmd']} for p, i in sorted(self.processes.items())],
    }


# ---- the stream job as a subprocess -----------------------------------------------------------


def ensure_models(model_dir: str) -> None:
  """Bootstraps the registry when a detector has no model (as run_local.sh does)."""
  if all(registry.latest_version(model_dir, d) for d in registry.DETECTORS):
    return
  log(f'no complete model registry at {model_dir}: python -m pipelines.bootstrap (a few minutes)')
  subprocess.run([sys.executable, '-m', 'pipelines.bootstrap', '--model_dir', model_dir],
                 cwd=ROOT, check=True)


class StreamJob:
  """``python -m pipelines.stream --runner=FlinkRunner ...`` in its own process group.

  The LOOPBACK Python SDK harness runs inside this process; the job server JVM (embedded
  Flink) and the expansion service JVM are its children. :meth:`stop` interrupts it (SIGINT:
  the job server is stopped by its ``with`` block), then ends the group if it lingers.
  """

  def __init__(self, args: Sequence[str], log_path: str,
               env: Optional[dict[str, str]] = None):
    self.args = [sys.executable, '-m', 'pipelines.stream', *args]
    self.log_path = log_path
    self.env = dict(env or {})
    self.proc: Optional[subprocess.Popen] = None
    self.started = 0.0

  def start(self) -> 'StreamJob':
    self._log = open(self.log_path, 'wb')  # pylint: disable=consider-using-with
    env = dict(os.environ, PYTHONUNBUFFERED='1', **self.env)
    self.started = time.monotonic()
    self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                 env=env, start_new_session=True)
    log(f'stream job started (pid {self.proc.pid}), log {self.log_path}')
    return self

  @property
  def pid(self) -> int:
    return self.proc.pid

  def alive(self) -> bool:
    return self.proc is not None and self.proc.poll() is None

  def stop(self, grace_s: float = 30.0) -> Optional[int]:
    if self.proc is None:
      return None
    if self.alive():
      with contextlib.suppress(ProcessLookupError):
        self.proc.send_signal(signal.SIGINT)
      try:
        self.proc.wait(grace_s)
      except subprocess.TimeoutExpired:
        pass
    # Whatever is left of the group we started (job server / expansion JVMs), by its id.
    for sig in (signal.SIGTERM, signal.SIGKILL):
      try:
        os.killpg(self.proc.pid, sig)
      except (ProcessLookupError, PermissionError):
        break
      time.sleep(3)
    with contextlib.suppress(subprocess.TimeoutExpired):
      self.proc.wait(10)
    self._log.close()
    return self.proc.returncode

  def tail(self, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
      with open(self.log_path, 'rb') as f:
        return b'\n'.join(f.read().splitlines()[-lines:]).decode('utf-8', 'replace')
    return ''


_REPORTED_FLAGS = ('environment_type', 'sdk_worker_parallelism', 'parallelism',
                   'max_bundle_time_mills', 'max_bundle_size', 'batch_size',
                   'checkpointing_interval', 'object_reuse', 'kafka_producer', 'experiments')


def effective_job_flags(args: Sequence[str]) -> dict[str, str]:
  """The flags that shape the job's speed as ``pipelines.stream`` will run with ``args``:
  its own defaults for Flink applied (environment, bundle time, ...); Flink's runner defaults
  named where nothing sets them."""
  try:
    argv = stream.with_stream_defaults(['--runner=FlinkRunner', '--flink_master=[local]', *args])
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'{type(e).__name__}: {e}'}
  runners.remove_temporary_storage(argv)  # only looked at: no job uses its state folder
  out = {}
  for arg in argv:
    if arg.startswith('--'):
      key, _, value = arg[2:].partition('=')
      if key == 'experiments':  # given once per experiment
        out[key] = ','.join(filter(None, (out.get(key), value)))
      elif key in _REPORTED_FLAGS:
        out[key] = value or 'on'  # a bare flag
  out.setdefault('max_bundle_time_mills', '1000 (Flink runner default)')
  out.setdefault('max_bundle_size', '1000 (Flink runner default)')
  out.setdefault('kafka_producer', stream.StreamOptions([]).kafka_producer)
  return out


def stream_args(*, bootstrap: str, topics: dict[str, str], output: str, model_dir: str,
                parallelism: int, roll_seconds: int, run_for_s: float, job_name: str,
                extra: Sequence[str] = ()) -> list[str]:
  return [
      '--runner=FlinkRunner', '--flink_master=[local]', f'--parallelism={parallelism}',
      f'--bootstrap_servers={bootstrap}',
      *[f'--{s}_topic={topics[s]}' for s in ('network', 'process', 'memory')],
      f'--alerts_topic={topics.get("alerts", "")}', f'--output={output}',
      f'--model_dir={model_dir}', f'--roll_seconds={roll_seconds}', f'--run_for_s={run_for_s}',
      f'--job_name={job_name}', f'--consumer_group={job_name}', *extra]


# ---- results ----------------------------------------------------------------------------------


def write_json(results_dir: str, name: str, data: dict[str, Any]) -> str:
  os.makedirs(results_dir, exist_ok=True)
  path = os.path.join(results_dir, f'{name}.json')
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(data, f, indent=2, default=str)
    f.write('\n')
  return path


def pyplot():
  # Local: matplotlib is optional (the tools/test extra) and its backend must be set first.
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def fmt(value: Optional[float], digits: int = 0, suffix: str = '') -> str:
  if value is None:
    return 'n/a'
  return f'{value:,.{digits}f}{suffix}'


_UUID = re.compile(rb'uuid\\?"\s*:\s*\\?"([0-9a-fA-F-]{36})')


def alert_uuid(value: bytes) -> Optional[str]:
  """The record uuid inside an alert message's ``details`` (network alerts), cheaply."""
  m = _UUID.search(value)
  if m:
    return m.group(1).decode()
  with contextlib.suppress(ValueError, KeyError, TypeError):
    return json.loads(json.loads(value)['details']).get('uuid')
  return None
