"""A standalone Flink session cluster (``scripts/flink_cluster.sh``: a JobManager and a
TaskManager JVM) on free loopback ports, and its REST API's view of a job."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from typing import Any, Optional

from harness.procs import alive
from harness.ports import free_port
from harness.scripts import ScriptCluster


class FlinkCluster(ScriptCluster):
  """``scripts/flink_cluster.sh`` (start, stop, kill-taskmanager, start-taskmanager) in a run
  dir of its own (stopped by :meth:`stop`).

  ``heartbeat_interval_ms`` / ``heartbeat_timeout_ms``: short ones (1 s / 6 s instead of
  Flink's 10 s / 50 s) make a lost TaskManager noticed in seconds; None keeps Flink's.

  Every cluster gets Prometheus endpoints on free ports (``metrics_ports``: one per JVM, in the
  order they start). ``worker_pool``: a Python SDK worker pool beside the TaskManager
  (``worker_pool_port``; jobs use ``--environment_type=EXTERNAL``). ``s3``: an
  :class:`harness.s3.S3Server` whose endpoint and credentials the S3 plugin gets. ``cwd``:
  the working directory the cluster (and pool) are started from."""

  SCRIPT = 'flink_cluster.sh'

  def __init__(self, run_dir: Optional[str] = None, slots: int = 2,
               heartbeat_interval_ms: Optional[int] = 1000,
               heartbeat_timeout_ms: Optional[int] = 6000, *, worker_pool: bool = False,
               s3=None, cwd: Optional[str] = None):
    self.run_dir = run_dir or tempfile.mkdtemp(prefix='harness-flink-')
    self.rest_port = free_port()
    self.metrics_ports = [free_port(), free_port()]
    self.cwd = cwd
    self.settings = {'FLINK_REST_PORT': str(self.rest_port), 'FLINK_RPC_PORT': str(free_port()),
                     'FLINK_RUN_DIR': self.run_dir, 'FLINK_TM_SLOTS': str(slots),
                     'FLINK_METRICS_PORTS': ','.join(map(str, self.metrics_ports))}
    self.worker_pool_port = free_port() if worker_pool else None
    if worker_pool:
      self.settings['FLINK_WORKER_POOL_PORT'] = str(self.worker_pool_port)
    if s3 is not None:
      self.settings.update(FLINK_S3_ENDPOINT=s3.endpoint, FLINK_S3_ACCESS_KEY=s3.access_key,
                           FLINK_S3_SECRET_KEY=s3.secret_key)
    if heartbeat_interval_ms is not None:
      self.settings['FLINK_HEARTBEAT_INTERVAL_MS'] = str(heartbeat_interval_ms)
    if heartbeat_timeout_ms is not None:
      self.settings['FLINK_HEARTBEAT_TIMEOUT_MS'] = str(heartbeat_timeout_ms)
    self.env = dict(os.environ, **self.settings)
    self.master = f'localhost:{self.rest_port}'

  def describe(self) -> str:
    return f'Flink cluster on {self.master}'

  def kill_taskmanager(self) -> None:
    """SIGKILL of the TaskManager JVM (a lost machine)."""
    self.run('kill-taskmanager')

  def start_taskmanager(self) -> None:
    """A new TaskManager beside the running JobManager; returns once it is registered."""
    self.run('start-taskmanager')

  def pid(self, name: str) -> Optional[int]:
    """The pid of ``jobmanager`` or ``taskmanager``, None when it is not running."""
    with contextlib.suppress(OSError, ValueError):
      with open(os.path.join(self.run_dir, f'{name}.pid'), encoding='utf-8') as f:
        pid = int(f.read().strip())
      if alive(pid):
        return pid
    return None


def flink_job(master: str, name: str) -> dict[str, Any]:
  """The newest Flink job called ``name`` on a session cluster, from its REST API: ``jid``,
  ``state`` (RUNNING, RESTARTING, CANCELED, ...), ``restarts`` (numRestarts) and
  ``checkpoints`` (completed, restored). ``{'state': 'NONE'}`` when there is none yet, and
  ``{'state': 'UNREACHABLE'}`` when the JobManager does not answer."""
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
