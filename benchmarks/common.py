"""What the throughput and latency benchmarks share: a broker, pre-filled topics, the stream job
as a subprocess, archive polling, memory sampling, the machine, and the result files.

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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from generator.rate import TokenBucket
from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def machine_info() -> dict[str, Any]:
  """Cores, CPU model, RAM, load and the versions of everything measured."""
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
  from transforms import kafka_io  # pylint: disable=import-outside-toplevel
  versions.update({'beam_java': kafka_io.JAVA_BEAM_VERSION, 'flink': '1.19.3',
                   'kafka_broker': '3.9.2', 'java': _first_line(['java', '-version'])})
  git = _first_line(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'])
  dirty = subprocess.run(['git', '-C', ROOT, 'status', '--porcelain', '--untracked-files=no'],
                         capture_output=True, text=True, check=False).stdout.strip()
  if git.startswith('fatal') and os.environ.get('BENCH_GIT_REV'):
    # A `git archive` export of a commit (a clean copy beside a busy working tree).
    git, dirty = os.environ['BENCH_GIT_REV'] + ' (exported)', ''
  return {
      'cores': os.cpu_count(), 'cpu': cpu, 'ram_gb': mem_gb,
      'load_avg_at_start': [round(x, 2) for x in os.getloadavg()],
      'os': platform.platform(), 'versions': versions,
      'git': git + (' (working tree modified)' if dirty else ''),
      'when_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S'),
  }


def machine_line(m: dict[str, Any]) -> str:
  v = m['versions']
  return (f"{m['cores']} cores ({m['cpu']}), {m['ram_gb']} GB RAM, load {m['load_avg_at_start']} "
          f"at start; Python {v.get('python')}, Beam {v.get('apache_beam')} (Java "
          f"{v.get('beam_java')}), Flink {v.get('flink')}, Kafka {v.get('kafka_broker')}; "
          f"git {m['git']}; {m['when_utc']} UTC")


# ---- Kafka ------------------------------------------------------------------------------------


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Broker:
  """``scripts/kafka.sh`` on free ports in a temporary run dir (stopped by :meth:`stop`)."""

  def __init__(self, partitions: int = 4, run_dir: Optional[str] = None):
    self._own_dir = run_dir is None  # a temporary dir: removed (with the data) by stop()
    self.run_dir = run_dir or tempfile.mkdtemp(prefix='bench-kafka-')
    self.port = free_port()
    self.env = dict(os.environ, KAFKA_PORT=str(self.port),
                    KAFKA_CONTROLLER_PORT=str(free_port()), KAFKA_RUN_DIR=self.run_dir,
                    KAFKA_PARTITIONS=str(partitions))
    self.bootstrap = f'127.0.0.1:{self.port}'

  def _script(self, action: str) -> None:
    proc = subprocess.run([os.path.join(ROOT, 'scripts', 'kafka.sh'), action], env=self.env,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode:
      raise RuntimeError(f'scripts/kafka.sh {action} failed:\n{proc.stdout}\n{proc.stderr}')

  def start(self) -> 'Broker':
    t0 = time.monotonic()
    try:
      self._script('start')
    except BaseException:  # interrupted or failed half-way: the broker may be up already
      with contextlib.suppress(Exception):
        self.stop()
      raise
    log(f'Kafka broker on {self.bootstrap} ({time.monotonic() - t0:.1f} s), data in {self.run_dir}')
    return self

  def pid(self) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError):
      with open(os.path.join(self.run_dir, 'kafka.pid'), encoding='utf-8') as f:
        return int(f.read().strip())
    return None

  def stop(self) -> None:
    self._script('stop')
    if self._own_dir:
      shutil.rmtree(self.run_dir, ignore_errors=True)

  def restart(self, down_s: float = 5.0) -> None:
    """Stops the broker and starts it again on the same port with the same data (a broker
    restart as clients see it: connections refused for ``down_s``, then back)."""
    self._script('stop')
    time.sleep(down_s)
    self._script('start')


@contextlib.contextmanager
def broker_for(bootstrap: Optional[str], partitions: int) -> Iterator[tuple[str, Optional[int]]]:
  """(bootstrap, broker pid or None): the given broker, or our own for the block."""
  if bootstrap:
    yield bootstrap, local_broker_pid(bootstrap)
    return
  broker = Broker(partitions).start()
  try:
    yield broker.bootstrap, broker.pid()
  finally:
    broker.stop()


def local_broker_pid(bootstrap: str) -> Optional[int]:
  """The pid of a scripts/kafka.sh broker on this host listening on ``bootstrap``'s port (for
  its memory), else None."""
  port = bootstrap.split(',')[0].rsplit(':', 1)[-1]

  def ours(cmd: str) -> bool:
    if 'kafka.Kafka ' not in cmd:
      return False
    config = cmd.split('kafka.Kafka ', 1)[1].split(' ')[0]
    with contextlib.suppress(OSError):
      with open(config, encoding='utf-8') as f:
        return f'PLAINTEXT://127.0.0.1:{port}\n' in f.read().replace(',', '\n')
    return False

  return find_pid(ours)


def make_topics(bootstrap: str, topics: Iterable[str], partitions: int) -> None:
  from confluent_kafka.admin import AdminClient, NewTopic  # pylint: disable=import-outside-toplevel
  admin = AdminClient({'bootstrap.servers': bootstrap})
  futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1)
                                 for t in topics])
  for f in futures.values():
    f.result(timeout=30)


class Lag:
  """End offsets minus the group's committed offsets, over a topic's partitions. Uses a plain
  consumer (committed()): the admin client's group-offset call can crash on a fresh broker."""

  def __init__(self, bootstrap: str, topic: str, group: str, partitions: int = 4):
    from confluent_kafka import Consumer, TopicPartition  # pylint: disable=import-outside-toplevel
    self._consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': group,
                               'enable.auto.commit': False})
    self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

  def offsets(self) -> tuple[int, int]:
    """(committed, end), each summed over the partitions; raises KafkaException when the
    broker does not answer within 10 s."""
    committed = end = 0
    for tp in self._consumer.committed(self._partitions, timeout=10):
      _, high = self._consumer.get_watermark_offsets(tp, timeout=10)
      committed += max(tp.offset, 0)
      end += high
    return committed, end

  def __call__(self) -> int:
    committed, end = self.offsets()
    return end - committed

  def close(self):
    self._consumer.close()


def bench_topics(prefix: str) -> dict[str, str]:
  """Fresh topic names for one run: ``{'network': ..., 'process': ..., 'memory': ...,
  'alerts': ...}`` (a fresh name means 'earliest' reads only this run's data)."""
  suffix = uuid.uuid4().hex[:8]
  return {s: f'{prefix}_{s}_{suffix}' for s in ('network', 'process', 'memory', 'alerts')}


def producer(bootstrap: str, **extra):
  from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel
  config = {'bootstrap.servers': bootstrap, 'linger.ms': 50, 'batch.num.messages': 10000,
            'compression.type': 'lz4', 'queue.buffering.max.messages': 500000,
            'queue.buffering.max.kbytes': 1048576, 'acks': 'all'}
  config.update(extra)
  return Producer(config)


def produce_all(bootstrap: str, messages: Iterable[Any]) -> int:
  """Sends generator ``Message`` objects as fast as the broker takes them; returns the count
  acknowledged (raises when any failed)."""
  prod = producer(bootstrap)
  failed = []

  def on_delivery(err, _msg):
    if err is not None:
      failed.append(err)

  sent = 0
  for m in messages:
    while True:
      try:
        prod.produce(m.topic, value=m.value, key=m.key, timestamp=m.timestamp_ms,
                     on_delivery=on_delivery)
        break
      except BufferError:
        prod.poll(0.05)
    sent += 1
    if sent % 1000 == 0:
      prod.poll(0)
  left = prod.flush(120)
  if failed or left:
    raise RuntimeError(f'pre-fill: {len(failed)} failed, {left} unconfirmed of {sent}')
  return sent


class Traffic(threading.Thread):
  """Sends ``count`` synthetic network messages (endless with None, until :meth:`stop_sending`)
  at ``rate``/s in the background, through a KafkaSink (acks=all, idempotent); its delivery
  reports give the acknowledged uuids. A broker outage only delays deliveries (librdkafka
  retries until message.timeout.ms, 5 min). Used by the fault tests and benchmarks/chaos.py.

  Used as a context manager: leaving the block early (a failed assertion) stops the sending
  and closes the producer, so nothing keeps sending or reconnecting after the test."""

  def __init__(self, bootstrap: str, topics: dict[str, str], count: Optional[int], rate: float,
               seed: int = 11, producer_config: Optional[dict] = None):
    super().__init__(daemon=True)
    # Event times a few minutes back: the job's windows close as soon as data is read.
    start_ms = int((time.time() - 600) * 1000)
    self.config = SourceConfig(streams=('network',), count=count, seed=seed,
                               event_rate=rate, start_ms=start_ms, topics=topics)
    self.sink = KafkaSink(bootstrap, producer_config)
    self.rate = rate
    self.error: Optional[BaseException] = None
    self._stopping = threading.Event()
    self._enough = threading.Event()

  def __enter__(self) -> 'Traffic':
    return self

  def __exit__(self, *_exc) -> None:
    self._stopping.set()
    if self.is_alive():
      self.join(30)
    if not self.is_alive():  # else the thread itself closes the sink once its flush is over
      self.sink.close(timeout_s=5)

  def run(self):
    try:
      bucket = TokenBucket(self.rate)
      for message in generate_messages(self.config):
        if self._stopping.is_set() or self._enough.is_set():
          break
        bucket.acquire()
        self.sink.send(message)
      self.sink.close(timeout_s=5 if self._stopping.is_set() else 120)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e

  def stop_sending(self) -> None:
    """Ends an endless run: no more sends; what is in flight is still confirmed (finish)."""
    self._enough.set()

  def finish(self, timeout_s: float = 180) -> dict:
    self.join(timeout_s)
    assert not self.is_alive(), 'the generator did not finish'
    assert self.error is None, self.error
    return self.sink.stats()


# ---- a standalone Flink cluster ---------------------------------------------------------------


class FlinkCluster:
  """``scripts/flink_cluster.sh``: a JobManager and a TaskManager JVM on free loopback ports,
  in a run dir of their own (stopped by :meth:`stop`). Heartbeats default to 1 s / 6 s instead
  of Flink's 10 s / 50 s, so that a lost TaskManager is noticed in seconds."""

  def __init__(self, run_dir: Optional[str] = None, slots: int = 2,
               heartbeat_interval_ms: int = 1000, heartbeat_timeout_ms: int = 6000):
    self.run_dir = run_dir or tempfile.mkdtemp(prefix='bench-flink-')
    self.rest_port = free_port()
    self.settings = {'FLINK_REST_PORT': str(self.rest_port), 'FLINK_RPC_PORT': str(free_port()),
                     'FLINK_RUN_DIR': self.run_dir, 'FLINK_TM_SLOTS': str(slots),
                     'FLINK_HEARTBEAT_INTERVAL_MS': str(heartbeat_interval_ms),
                     'FLINK_HEARTBEAT_TIMEOUT_MS': str(heartbeat_timeout_ms)}
    self.env = dict(os.environ, **self.settings)
    self.master = f'localhost:{self.rest_port}'

  def _script(self, action: str) -> None:
    proc = subprocess.run([os.path.join(ROOT, 'scripts', 'flink_cluster.sh'), action],
                          env=self.env, capture_output=True, text=True, timeout=180, check=False)
    if proc.returncode:
      raise RuntimeError(f'scripts/flink_cluster.sh {action} failed:\n{proc.stdout}\n{proc.stderr}')

  def start(self) -> 'FlinkCluster':
    t0 = time.monotonic()
    try:
      self._script('start')
    except BaseException:
      with contextlib.suppress(Exception):
        self.stop()
      raise
    log(f'Flink cluster on {self.master} ({time.monotonic() - t0:.1f} s), run dir {self.run_dir}')
    return self

  def stop(self) -> None:
    self._script('stop')

  def kill_taskmanager(self) -> None:
    """SIGKILL of the TaskManager JVM (a lost machine)."""
    self._script('kill-taskmanager')

  def start_taskmanager(self) -> None:
    """A new TaskManager beside the running JobManager; returns once it is registered."""
    self._script('start-taskmanager')

  def pid(self, name: str) -> Optional[int]:
    """The pid of ``jobmanager`` or ``taskmanager``, None when it is not running."""
    with contextlib.suppress(OSError, ValueError):
      with open(os.path.join(self.run_dir, f'{name}.pid'), encoding='utf-8') as f:
        pid = int(f.read().strip())
      if os.path.exists(f'/proc/{pid}'):
        return pid
    return None


def flink_job(master: str, name: str) -> dict[str, Any]:
  """The newest Flink job called ``name`` on a session cluster, from its REST API: ``jid``,
  ``state`` (RUNNING, RESTARTING, CANCELED, ...), ``restarts`` (numRestarts) and
  ``checkpoints`` (completed, restored). ``{'state': 'NONE'}`` when there is none yet, and
  ``{'state': 'UNREACHABLE'}`` when the JobManager does not answer."""
  import urllib.error  # pylint: disable=import-outside-toplevel
  import urllib.request  # pylint: disable=import-outside-toplevel
  base = 'http://' + master.strip().rstrip('/').removeprefix('http://')

  def get(path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=5) as r:
      return json.load(r)

  try:
    jobs = [j for j in get('/jobs/overview')['jobs'] if j.get('name') == name]
    if not jobs:
      return {'state': 'NONE'}
    job = max(jobs, key=lambda j: j['start-time'])
    out = {'jid': job['jid'], 'state': job['state']}
    metrics = get(f'/jobs/{job["jid"]}/metrics?get=numRestarts')
    out['restarts'] = int(metrics[0]['value']) if metrics else None
    counts = get(f'/jobs/{job["jid"]}/checkpoints').get('counts', {})
    out['checkpoints'] = {k: counts.get(k) for k in ('completed', 'failed', 'restored')}
    return out
  except (OSError, urllib.error.URLError, ValueError, KeyError, IndexError):
    return {'state': 'UNREACHABLE'}


# ---- outputs ----------------------------------------------------------------------------------


class ArchiveCounter:
  """Rows in the finished Parquet files under a folder (footers only; each file read once)."""

  def __init__(self, folder: str):
    self.folder = folder
    self._seen: dict[str, int] = {}

  def rows(self) -> int:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
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
  # pylint: disable=import-outside-toplevel
  import pyarrow as pa
  import pyarrow.compute as pc
  import pyarrow.parquet as pq
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


# ---- processes and memory ---------------------------------------------------------------------


def _read_cmdline(pid: int) -> str:
  with contextlib.suppress(OSError):
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
  return ''


def find_pid(predicate: Callable[[str], bool]) -> Optional[int]:
  for name in os.listdir('/proc'):
    if name.isdigit() and predicate(_read_cmdline(int(name))):
      return int(name)
  return None


def _status_kb(pid: int) -> dict[str, int]:
  out = {}
  with contextlib.suppress(OSError):
    with open(f'/proc/{pid}/status', encoding='utf-8') as f:
      for line in f:
        if line.startswith(('VmRSS:', 'VmHWM:')):
          out[line.split(':')[0]] = int(line.split()[1])
  return out


def _children(pid: int) -> list[int]:
  out = []
  with contextlib.suppress(OSError):
    for tid in os.listdir(f'/proc/{pid}/task'):
      with contextlib.suppress(OSError):
        with open(f'/proc/{pid}/task/{tid}/children', encoding='utf-8') as f:
          out.extend(int(c) for c in f.read().split())
  return out


def descendants(root: int) -> list[int]:
  """Every process below ``root`` (Flink starts the Python SDK workers under the job server,
  or under a cluster's TaskManager)."""
  found, todo = [], [root]
  while todo:
    for child in _children(todo.pop()):
      found.append(child)
      todo.append(child)
  return found


def rss_mb(pid: int) -> float:
  return _status_kb(pid).get('VmRSS', 0) / 1024


def job_server_pids() -> list[int]:
  """Our child JVMs running the Flink job server (the embedded Flink lives there)."""
  return [pid for pid in _children(os.getpid()) if 'job-server' in _read_cmdline(pid)]


def sdk_worker_pids(root: int) -> list[int]:
  """The Python SDK worker processes (PROCESS environment, scripts/sdk_worker.sh) below
  ``root``: a TaskManager, or a job server with the embedded Flink."""
  return sorted(p for p in descendants(root) if role_of(_read_cmdline(p)) == 'python_sdk_worker')


def cpu_ticks(pid: int) -> int:
  """User + system CPU time of a process so far, in clock ticks (0 when it is gone)."""
  with contextlib.suppress(OSError, IndexError, ValueError):
    with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])
  return 0


def role_of(cmdline: str) -> str:
  if ' --version' in cmdline or ' pip freeze' in cmdline:
    return 'short_lived_helper'  # Beam's environment probes at submission (java, docker, pip)
  if 'kafka.Kafka' in cmdline:
    return 'kafka_broker'
  if 'sdk_worker' in cmdline:  # PROCESS environment: scripts/sdk_worker.sh, sdk_worker_main
    return 'python_sdk_worker'
  if 'java' in cmdline.split(' ', 1)[0] or ' -jar ' in cmdline or '-cp ' in cmdline:
    if 'job-server' in cmdline:
      return 'flink_job_server_jvm'
    if 'expansion-service' in cmdline:
      return 'expansion_service_jvm'
    return 'other_jvm'
  if 'python' in cmdline.split(' ', 1)[0]:
    return 'python'
  return 'other'


class MemorySampler:
  """Samples VmRSS / VmHWM of process trees every ``every_s`` in a thread.

  ``roots``: ``{label: pid}``; every descendant is sampled too, under the role its command line
  shows (a root's own role is its label). Per role it keeps the peak of the summed RSS, the
  largest VmHWM seen and the processes seen.
  """

  def __init__(self, roots: dict[str, int], every_s: float = 0.5):
    self.roots = {k: v for k, v in roots.items() if v}
    self.every_s = every_s
    self.peak_rss_kb: dict[str, int] = {}
    self.peak_hwm_kb: dict[str, int] = {}
    self.processes: dict[int, dict[str, Any]] = {}
    self._root_cmds: set[str] = set()
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
      for child in _children(pid):
        stack.append((child, None))
    return out

  def sample(self) -> dict[str, float]:
    """Samples once; returns the RSS summed per role now, in MB."""
    totals: dict[str, int] = {}
    if not self._root_cmds:
      self._root_cmds = {_read_cmdline(pid) for pid in self.roots.values()} - {''}
    for pid, label in self._tree():
      info = self.processes.get(pid)
      if info is None:
        cmd = _read_cmdline(pid)
        if not cmd:
          continue
        role = label or role_of(cmd)
        if label is None and role == 'python':
          # A child showing its parent's command line is a fork about to exec (Beam's
          # environment probes): its RSS is the parent's shared pages, not new memory.
          role = 'python_child' if cmd not in self._root_cmds else 'fork_before_exec'
        info = self.processes[pid] = {'role': role, 'cmd': cmd[:160]}
      elif label and info['role'] != label:
        # Seen first below its launcher script (a restarted TaskManager), then made a root.
        info['role'] = label
      elif info['cmd'].startswith('bash '):  # a script that exec()s: show what it became
        info['cmd'] = (_read_cmdline(pid) or info['cmd'])[:160]
      status = _status_kb(pid)
      if not status:
        continue
      role = info['role']
      totals[role] = totals.get(role, 0) + status.get('VmRSS', 0)
      self.peak_hwm_kb[role] = max(self.peak_hwm_kb.get(role, 0), status.get('VmHWM', 0))
      info['hwm_kb'] = max(info.get('hwm_kb', 0), status.get('VmHWM', 0))
    for role, kb in totals.items():
      self.peak_rss_kb[role] = max(self.peak_rss_kb.get(role, 0), kb)
    return {role: round(kb / 1024, 1) for role, kb in sorted(totals.items())}

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

  def result(self) -> dict[str, Any]:
    return {
        'python_sdk_worker_processes': self.sdk_workers(),
        'peak_rss_mb': {r: round(kb / 1024) for r, kb in sorted(self.peak_rss_kb.items())},
        'peak_hwm_mb': {r: round(kb / 1024) for r, kb in sorted(self.peak_hwm_kb.items())},
        'processes': [{'pid': p, 'role': i['role'], 'hwm_mb': round(i.get('hwm_kb', 0) / 1024),
                       'cmd': i['cmd']} for p, i in sorted(self.processes.items())],
    }


# ---- the stream job as a subprocess -----------------------------------------------------------


def ensure_models(model_dir: str) -> None:
  """Bootstraps the registry when a detector has no model (as run_local.sh does)."""
  from model import registry  # pylint: disable=import-outside-toplevel
  if all(registry.latest_version(model_dir, d) for d in registry.DETECTORS):
    return
  log(f'no complete model registry at {model_dir}: python -m model.bootstrap (a few minutes)')
  subprocess.run([sys.executable, '-m', 'model.bootstrap', '--model_dir', model_dir],
                 cwd=ROOT, check=True)


class StreamJob:
  """``python -m pipelines.stream --runner=FlinkRunner ...`` in its own process group.

  The LOOPBACK Python SDK harness runs inside this process; the job server JVM (embedded
  Flink) and the expansion service JVM are its children. :meth:`stop` interrupts it (SIGINT:
  the job server is stopped by its ``with`` block), then ends the group if it lingers.
  """

  def __init__(self, args: Sequence[str], log_path: str):
    self.args = [sys.executable, '-m', 'pipelines.stream', *args]
    self.log_path = log_path
    self.proc: Optional[subprocess.Popen] = None
    self.started = 0.0

  def start(self) -> 'StreamJob':
    self._log = open(self.log_path, 'wb')  # pylint: disable=consider-using-with
    env = dict(os.environ, PYTHONUNBUFFERED='1')
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
                   'checkpointing_interval', 'object_reuse')


def effective_job_flags(args: Sequence[str]) -> dict[str, str]:
  """The flags that shape the job's speed as ``pipelines.stream`` will run with ``args``:
  its own defaults for Flink applied (environment, bundle time, ...); Flink's runner defaults
  named where nothing sets them."""
  try:
    from pipelines import stream  # pylint: disable=import-outside-toplevel
    with_defaults = getattr(stream, 'with_stream_defaults', None)
    if with_defaults is None:
      from pipelines.options import with_flink_defaults as with_defaults  # pylint: disable=import-outside-toplevel
    argv = with_defaults(['--runner=FlinkRunner', '--flink_master=[local]', *args])
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'{type(e).__name__}: {e}'}
  out = {}
  for arg in argv:
    if arg.startswith('--'):
      key, _, value = arg[2:].partition('=')
      if key in _REPORTED_FLAGS:
        out[key] = value or 'on'  # a bare flag
  out.setdefault('max_bundle_time_mills', '1000 (Flink runner default)')
  out.setdefault('max_bundle_size', '1000 (Flink runner default)')
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
