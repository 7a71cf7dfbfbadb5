"""Running the repository's server scripts (``scripts/kafka.sh``, ``scripts/flink_cluster.sh``,
``scripts/s3_server.sh``) and checking that what they need is installed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from typing import Mapping, Optional

from transforms import jvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAFKA_JAR = 'kafka/lib/kafka_2.13-3.9.2.jar'
FLINK_JAR = 'flink/lib/flink-runtime-1.19.3.jar'


def run_script(name: str, action: str, env: Mapping[str, str], timeout: float,
               cwd: Optional[str] = None) -> str:
  """``scripts/<name> <action>`` with ``env``; returns its stdout, raises RuntimeError (with
  its output) when it fails. Prints how long it took, for the test and benchmark logs."""
  t0 = time.monotonic()
  proc = subprocess.run([os.path.join(ROOT, 'scripts', name), action], env=dict(env), cwd=cwd,
                        timeout=timeout, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'scripts/{name} {action} failed ({proc.returncode}):\n'
                       f'{proc.stdout}\n{proc.stderr}')
  print(f'[timing] scripts/{name} {action}: {time.monotonic() - t0:.1f} s', file=sys.stderr,
        flush=True)
  return proc.stdout


class ScriptCluster:
  """A cluster that ``scripts/<SCRIPT> start|stop|...`` runs in ``run_dir`` with ``env``
  (subclasses set them, and :meth:`describe`): started by :meth:`start`, which stops what
  it started when the start fails, and stopped by :meth:`stop`."""

  SCRIPT = ''
  run_dir: str
  env: Mapping[str, str]
  cwd: Optional[str] = None

  def describe(self) -> str:
    return self.SCRIPT

  def run(self, action: str) -> str:
    """``scripts/<SCRIPT> <action>`` for this cluster; its stdout."""
    return run_script(self.SCRIPT, action, self.env, timeout=180, cwd=self.cwd)

  def start(self):
    try:
      self.run('start')
    except BaseException:
      with contextlib.suppress(Exception):
        self.stop()
      raise
    print(f'[harness] {self.describe()}, run dir {self.run_dir}', file=sys.stderr, flush=True)
    return self

  def stop(self) -> None:
    self.run('stop')


def script_jars_dir() -> str:
  """Where the scripts find the broker's and the cluster's jars (their JARS_DIR)."""
  return os.environ.get('JARS_DIR', os.path.join(ROOT, '.cache', 'jars'))


def missing_kafka() -> Optional[str]:
  """Why scripts/kafka.sh cannot run here (java or the Kafka jars missing), else None."""
  if shutil.which('java') is None:
    return 'java is not installed'
  if not os.path.isfile(os.path.join(script_jars_dir(), KAFKA_JAR)):
    return f'{KAFKA_JAR} missing: run scripts/fetch_jars.sh'
  return None


def missing_jvm_side() -> Optional[str]:
  """Why a broker, a Flink cluster and a Flink job cannot run here, else None."""
  reason = missing_kafka()
  if reason:
    return reason
  try:
    jvm.flink_job_server_jar()
    jvm.io_expansion_service_jar()
  except FileNotFoundError as e:
    return str(e)
  if not os.path.isfile(os.path.join(jvm.jars_dir(), KAFKA_JAR)):
    return f'{KAFKA_JAR} missing: run scripts/fetch_jars.sh'
  if not os.path.isfile(os.path.join(jvm.jars_dir(), FLINK_JAR)):
    return f'{FLINK_JAR} missing: run scripts/fetch_jars.sh'
  return None
