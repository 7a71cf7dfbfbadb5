"""A standalone Spark cluster (``scripts/spark_cluster.sh``: a Master and a Worker JVM) on free
loopback ports, and its Master's view of the applications it ran."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Any, Optional

from harness.ports import free_port
from harness.scripts import ScriptCluster, script_jars_dir
from pipelines.runners import SPARK_JOB_SERVER_JAR


def missing_spark() -> Optional[str]:
  """Why scripts/spark_cluster.sh cannot run here (java or the Spark job server jar missing),
  else None."""
  if shutil.which('java') is None:
    return 'java is not installed'
  jar = os.path.join(script_jars_dir(), SPARK_JOB_SERVER_JAR)
  if not os.path.isfile(jar):
    return f'{jar} is missing: run scripts/fetch_jars.sh'
  return None


class SparkCluster(ScriptCluster):
  """``scripts/spark_cluster.sh`` (start, stop, status) in a run dir of its own (stopped by
  :meth:`stop`)."""

  SCRIPT = 'spark_cluster.sh'

  def __init__(self, run_dir: Optional[str] = None, cores: int = 2, memory: str = '2g'):
    self.run_dir = run_dir or tempfile.mkdtemp(prefix='harness-spark-')
    self.master_port = free_port()
    self.ui_port = free_port()
    self.settings = {'SPARK_MASTER_PORT': str(self.master_port),
                     'SPARK_MASTER_WEBUI_PORT': str(self.ui_port),
                     'SPARK_WORKER_WEBUI_PORT': str(free_port()),
                     'SPARK_RUN_DIR': self.run_dir, 'SPARK_WORKER_CORES': str(cores),
                     'SPARK_WORKER_MEMORY': memory}
    self.env = dict(os.environ, **self.settings)
    self.master_url = f'spark://127.0.0.1:{self.master_port}'
    self.ui = f'http://127.0.0.1:{self.ui_port}'

  def describe(self) -> str:
    return f'Spark cluster {self.master_url}, web UI {self.ui}'

  def state(self) -> dict[str, Any]:
    """The Master's JSON status (``aliveworkers``, ``activeapps``, ``completedapps``, ...);
    ``{}`` when it does not answer."""
    try:
      with urllib.request.urlopen(self.ui + '/json/', timeout=5) as r:
        return json.load(r)
    except (OSError, urllib.error.URLError, ValueError):
      return {}

  def completed_apps(self) -> list[dict[str, Any]]:
    """The applications the Master has seen finish (``name``, ``state``, ``cores``, ...)."""
    return list(self.state().get('completedapps', []))
