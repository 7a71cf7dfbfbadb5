"""How the jobs run on their runner: the runner set-up, in one place.

The stream and retrain jobs take Beam's own runner flags (``--runner``, ``--flink_master``, ...)
and hand their command line here::

    argv = runners.with_runner_defaults(argv, runners.STREAMING)  # or runners.BATCH
    with runners.job_server(argv) as args:  # Flink: a loopback-only job server of our own
      result = beam.Pipeline(options=PipelineOptions(args)).run()
      ...
      runners.cancel(result, PipelineOptions(args))  # on a Flink session cluster too

:func:`with_runner_defaults` is the only place that adds flags to a job's command line. On
Flink it makes ``--runner=FlinkRunner`` alone run here, with no Docker and no download:

* the pinned job server jar and Flink version (transforms/jvm.py);
* Python SDK workers as local processes: ``PROCESS`` with scripts/sdk_worker.sh
  (pipelines/sdk_worker.py), two per core. ``LOOPBACK`` (the harness inside the submitting
  process) stays available with ``--environment_type=LOOPBACK``, and ``EXTERNAL`` for a worker
  pool beside each TaskManager of a real cluster (scripts/worker_pool.sh; its address defaults
  to ``localhost:50000``, the TaskManager's own host);
* for a streaming job: checkpoints every :data:`STREAM_CHECKPOINTING_MS`, a filesystem state
  backend, and the bundle settings of :data:`STREAMING_FLINK_DEFAULTS`;
* with ``--checkpoint_dir`` (a local path or ``s3://...``): checkpoints kept there and the
  job resumed from the newest checkpoint or savepoint found there;
* on the embedded Flink: its REST API and Flink's Prometheus reporter on loopback ports
  (:func:`flink_rest_url`, :data:`METRICS_PORTS_ENV`), which the end-of-run summary and
  :func:`stop_with_savepoint` use.

A flag the command line gives always wins. The DirectRunner needs nothing; the SparkRunner
has its own section below (:func:`with_spark_defaults`, :func:`spark_job_server`; batch jobs
only, docs/spark.md).

Every server the Flink JVMs start listens on loopback only (:func:`flink_job_server`; Beam
itself binds all interfaces, see docs/RUNTIME.md).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, List, Optional, Sequence

from apache_beam.options.pipeline_options import (FlinkRunnerOptions, PipelineOptions,
                                                  PortableOptions, StandardOptions)
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import S3Options
from apache_beam.runners.portability.flink_runner import FlinkJarJobServer, FlinkRunner
from apache_beam.runners.runner import PipelineState
from apache_beam.runners.portability.spark_runner import LOCAL_MASTER_PATTERN, SparkJarJobServer
from apache_beam.utils.subprocess_server import pick_port

from pipelines import fork_server, scratch, storage
from transforms import jvm, kafka_io
from transforms.parse import DEFAULT_BATCH_SIZE

_LOG = logging.getLogger(__name__)

# The kinds of job :func:`with_runner_defaults` sets up.
STREAMING = 'streaming'
BATCH = 'batch'

SDK_WORKER_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'sdk_worker.sh')

# Checkpoints on for a streaming job on Flink unless --checkpointing_interval says otherwise
# (-1: off). Without them Flink's restart strategy is "no restart": one SDK worker killed ended
# the whole job. With them, Flink 1.19 restarts a failed job from its last checkpoint
# (exponential delay from 1 s to 1 min, no limit on attempts, unless
# --number_of_execution_retries asks for a fixed count), and the Kafka offsets are committed at
# each checkpoint.
STREAM_CHECKPOINTING_MS = 10_000

# Flink closes a bundle after 1,000 elements or 1 s by default. A network alert waits for the
# Python stage's bundle (its records reached the worker in one burst near the bundle's end), so
# the time limit is a floor under alert latency: a shorter one lowered the p99 alert latency.
# The size limit is 5 batches (--batch_size): the Python worker scores each full batch while
# the JVM is still sending the rest of the bundle, and only the last one makes Flink wait at
# the bundle's end; with bundle = batch every batch waited, and throughput dropped.
#
# Object reuse: Flink otherwise copies every element between chained operators, by encoding
# and decoding it, a large share of the JVM's CPU time. Beam elements are immutable, and the
# only Java operators here are Beam's own (KafkaIO read and write, the shuffles), so the copies
# protect nothing (a Beam Flink-runner maintainer says the same in apache/beam#13240).
#
# Finishing the bundle before a checkpoint: by default Beam's Flink runner finishes it during
# the snapshot and keeps the output it could no longer send as buffered state. Restoring that
# buffer (Beam 2.62) hands its elements to the wrong outputs: a cancelled-and-resumed job
# failed with "GlobalWindow cannot be cast to IntervalWindow", and jobs restarted after a lost
# TaskManager lost records without an error in the fault tests (none since this default).
# Sending the output before the barrier leaves nothing buffered.
#
# The figures behind each choice: benchmarks/README.md, "Figures behind the code's defaults"
# and "Fault tests".
STREAMING_FLINK_DEFAULTS = {'--max_bundle_time_mills': '100',
                            '--max_bundle_size': str(5 * DEFAULT_BATCH_SIZE),
                            '--object_reuse': None,
                            '--finish_bundle_before_checkpointing': None}

CHECKPOINT_DIR_FLAG = '--checkpoint_dir'
_TEMPORARY_PREFIX = 'attack-detection-checkpoints-'
# Where scripts/worker_pool.sh listens by default (Beam's own examples use 50000 too).
DEFAULT_WORKER_POOL_PORT = 50000
# The Flink plugins of scripts/fetch_jars.sh (Prometheus reporter, S3 file system).
FLINK_PLUGINS_DIR = os.path.join(jvm.jars_dir(), 'flink', 'plugins')
# The embedded Flink's Prometheus endpoint: a port, a list or a range (``9250-9259``) taken
# from this environment variable; without it a free port is picked and logged.
METRICS_PORTS_ENV = 'FLINK_METRICS_PORTS'
PROMETHEUS_REPORTER = {
    'metrics.reporter.prom.factory.class':
        'org.apache.flink.metrics.prometheus.LoopbackPrometheusReporterFactory',
    'metrics.reporter.prom.host': '127.0.0.1',
}

FLINK_JOB_SERVER_MAIN = 'org.apache.beam.runners.flink.FlinkJobServerDriver'
# How a job is told where an expansion service for its Kafka transforms already runs.
EXPANSION_SERVICE_FLAG = '--expansion_service'

# The embedded Flink (MiniCluster) of a [local] job server: its own ports on loopback (with
# Flink's defaults some of them listen on all interfaces).
EMBEDDED_FLINK_CONF = {
    'jobmanager.rpc.address': jvm.LOCAL_HOST,
    'jobmanager.bind-host': jvm.LOCAL_HOST,
    'taskmanager.host': jvm.LOCAL_HOST,
    'taskmanager.bind-host': jvm.LOCAL_HOST,
    'rest.address': jvm.LOCAL_HOST,
    'rest.bind-address': jvm.LOCAL_HOST,
}


# --------------------------------------------------------------------------------------------
# Which runner
# --------------------------------------------------------------------------------------------


def is_flink(options: PipelineOptions) -> bool:
  return (options.view_as(StandardOptions).runner or '').lower() in ('flinkrunner', 'flink')


def is_embedded(flink_master: Optional[str]) -> bool:
  """Whether ``--flink_master`` means a Flink MiniCluster inside the job server JVM (``[local]``,
  or ``[auto]``, Beam's default, which is the same here) rather than a cluster at host:port."""
  return (flink_master or '[auto]').strip() in ('[local]', '[auto]')


def _value(argv: Sequence[str], flag: str) -> Optional[str]:
  """The value of ``flag`` in ``argv`` (``--flag=v`` or ``--flag v``), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith(flag + '='):
      return arg.split('=', 1)[1]
    if arg == flag and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _given(argv: Sequence[str]) -> set[str]:
  return {a.split('=', 1)[0] for a in argv if a.startswith('--')}


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def with_runner_defaults(argv: Sequence[str], kind: str) -> list[str]:
  """``argv`` with every runner default for a job of ``kind`` (:data:`STREAMING` or
  :data:`BATCH`) that the command line does not set itself (see the module docstring).

  Without ``--runner``: the DirectRunner, Beam's default, said explicitly. Raises
  FileNotFoundError (saying how to fetch it) when a streaming job on Flink lacks the pinned job
  server jar; a batch job then lets Beam fetch a job server, with the LOOPBACK harness.
  """
  if kind not in (STREAMING, BATCH):
    raise ValueError(f'kind must be {STREAMING!r} or {BATCH!r}, not {kind!r}')
  argv = list(argv)
  options = PipelineOptions(argv)
  if not options.view_as(StandardOptions).runner:
    argv.append('--runner=DirectRunner')
  if is_spark(options):
    return with_spark_defaults(argv, kind)
  flink = is_flink(options)
  if flink and kind == STREAMING and '--checkpointing_interval' not in _given(argv):
    argv.append(f'--checkpointing_interval={STREAM_CHECKPOINTING_MS}')
  argv = with_checkpoint_args(argv)
  if not flink:
    return argv
  try:
    argv = with_flink_defaults(argv)
  except FileNotFoundError:
    if kind == STREAMING:
      raise
    _LOG.warning('no pinned Flink job server (scripts/fetch_jars.sh); Beam will fetch one')
    if not any(a.startswith('--environment_type') for a in argv):
      argv.append('--environment_type=LOOPBACK')
    return argv
  if kind == STREAMING:
    given = _given(argv)
    argv += [flag if value is None else f'{flag}={value}'
             for flag, value in STREAMING_FLINK_DEFAULTS.items() if flag not in given]
  return argv


def with_flink_defaults(argv: Sequence[str]) -> list[str]:
  """The part of :func:`with_runner_defaults` every job on Flink gets: the pinned job server
  jar and Flink version, and Python SDK workers as local processes (PROCESS with
  scripts/sdk_worker.sh, two per core), unless the command line says otherwise. Without these
  Beam would download a job server and ask Docker for the harness. Raises FileNotFoundError
  (saying how to fetch it) when the pinned jar is missing. ``argv`` unchanged off Flink."""
  argv = list(argv)
  if not is_flink(PipelineOptions(argv)):
    return argv
  given = _given(argv)
  defaults = {
      '--flink_job_server_jar': (jvm.flink_job_server_app_jar
                                 if ships_one_jar(PipelineOptions(argv))
                                 else jvm.flink_job_server_jar),
      '--flink_version': lambda: jvm.FLINK_VERSION,
      '--environment_type': lambda: 'PROCESS',
  }
  argv += [f'{flag}={value()}' for flag, value in defaults.items() if flag not in given]
  environment = PipelineOptions(argv).view_as(PortableOptions).environment_type
  if environment == 'EXTERNAL' and not {'--environment_options', '--environment_config'} & given:
    # A worker pool beside each TaskManager (scripts/worker_pool.sh), reached on its own host.
    argv.append(f'--environment_config=localhost:{DEFAULT_WORKER_POOL_PORT}')
  if environment == 'EXTERNAL' and '--sdk_worker_parallelism' not in given:
    # The pool starts a worker per request; as for PROCESS, two per core of this host (the
    # TaskManager hosts' cores are not known here: set it for theirs).
    argv.append(f'--sdk_worker_parallelism={2 * (os.cpu_count() or 1)}')
  if environment == 'PROCESS':
    # Flink hands its Python operator instances to the workers round-robin, in the order they
    # open, which is not stable: with one worker per core the busy scoring stage's instances
    # were seen sharing one worker while another served only the light file writers. Two
    # per core spread them; an idle worker costs memory, not CPU (benchmarks/README.md,
    # "Figures behind the code's defaults").
    _with_process_workers(argv, given, workers_per_core=2)
  return argv


def _with_process_workers(argv: list[str], given: set[str], workers_per_core: int) -> None:
  """PROCESS environment defaults: Python SDK workers as processes of scripts/sdk_worker.sh,
  ``workers_per_core`` per core of this host, unless the command line set them."""
  if {'--environment_options', '--environment_config'} & given:
    return
  # Worker processes instead of LOOPBACK's threads of this process, which share one
  # interpreter lock: its Python work never uses more than one core.
  os.environ.setdefault('BEAM_SDK_PYTHON', sys.executable)
  # The JSON form: --environment_options would reach the Java expansion service too, whose
  # (EMBEDDED) environment refuses a process_command.
  argv.append('--environment_config=' + json.dumps({'command': SDK_WORKER_SCRIPT}))
  if '--sdk_worker_parallelism' not in given:
    argv.append(f'--sdk_worker_parallelism={workers_per_core * (os.cpu_count() or 1)}')


@contextlib.contextmanager
def forked_sdk_workers(argv: Sequence[str]) -> Iterator[None]:
  """For the span of a ``with`` block around the job server's start and the job: a fork
  server (pipelines/fork_server.py) that the job's PROCESS workers are forked from, when they
  run on this host (an embedded Flink started here, the default PROCESS environment of
  :func:`_with_process_workers`). It preloads the workers' imports while the JVMs start.
  Elsewhere nothing: scripts/sdk_worker.sh starts fresh workers then."""
  options = PipelineOptions(list(argv))
  portable = options.view_as(PortableOptions)
  if not (is_flink(options) and is_embedded(options.view_as(FlinkRunnerOptions).flink_master)
          and not portable.job_endpoint and portable.environment_type == 'PROCESS'
          and _value(argv, '--environment_config') == json.dumps({'command': SDK_WORKER_SCRIPT})):
    yield
    return
  with fork_server.running(os.environ.get('BEAM_SDK_PYTHON')):
    yield


def flink_pipeline_options(
    flink_master: str = '[local]',
    *,
    environment_type: Optional[str] = None,
    environment_config: Optional[str] = None,
    parallelism: Optional[int] = None,
    streaming: bool = True,
    checkpointing_interval_ms: Optional[int] = None,
    jars_dir: Optional[str] = None,
) -> List[str]:
  """Pipeline arguments for a pipeline built by hand (tests, experiments) to run on Flink with
  the pinned job server and no Docker; the jobs use :func:`with_runner_defaults` instead.

  ``flink_master``: ``[local]`` runs an embedded Flink MiniCluster inside the job server JVM;
  ``host:port`` (e.g. ``localhost:8081``, see scripts/flink_cluster.sh) submits to a session
  cluster's REST endpoint.

  ``environment_type`` (the Python SDK harness):

  * ``LOOPBACK`` (the default here, unlike the jobs' PROCESS): the harness runs inside the
    submitting Python process and Flink calls back into it. Right for ``[local]``, tests, and a
    cluster whose TaskManagers run on this host. The submitting process must stay alive while
    the job runs.
  * ``EXTERNAL`` with ``environment_config='host:port'``: for a real cluster. Start a worker pool
    beside each TaskManager (same Python, same packages: ``pip install .``)::

        PATH=/path/to/venv/bin:$PATH python -m apache_beam.runners.worker.worker_pool_main \\
            --service_port=50000

    The pool starts each SDK worker as plain ``python`` from ``PATH``, not with its own
    interpreter: without the venv first on ``PATH`` the workers die with "No module named
    apache_beam" and the Flink job hangs instead of failing. Verified here on the standalone
    cluster (see docs/RUNTIME.md).

    and pass ``environment_type='EXTERNAL', environment_config='localhost:50000'``; add
    ``--setup_file=./setup.py`` if the workers lack the project's packages.

  ``checkpointing_interval_ms``: needed for exactly-once state and for KafkaIO to commit offsets
  (``ReadKafkaMessages(commit_offsets=True)``).
  """
  env = (environment_type or 'LOOPBACK').upper()
  if env == 'DOCKER':
    raise ValueError('DOCKER environments cannot run here (no Docker engine): use LOOPBACK or EXTERNAL')
  if env == 'EXTERNAL' and not environment_config:
    raise ValueError("EXTERNAL needs environment_config='host:port' of a worker pool")
  args = [
      '--runner=FlinkRunner',
      f'--flink_master={flink_master}',
      f'--flink_version={jvm.FLINK_VERSION}',
      f'--flink_job_server_jar={jvm.flink_job_server_jar(jars_dir)}',
      f'--environment_type={env}',
  ]
  if environment_config:
    args.append(f'--environment_config={environment_config}')
  if streaming:
    args.append('--streaming')
  if parallelism:
    args.append(f'--parallelism={int(parallelism)}')
  if checkpointing_interval_ms:
    args.append(f'--checkpointing_interval={int(checkpointing_interval_ms)}')
  return args


# --------------------------------------------------------------------------------------------
# Checkpoints: resuming a job from its own retained Flink checkpoint (--checkpoint_dir)
# --------------------------------------------------------------------------------------------
#
# Why not just the committed Kafka offsets: offsets are committed when a checkpoint completes,
# but at that moment the records of the current output roll are still buffered in the Parquet
# sink's state (a GroupByKey waiting for its processing-time trigger). A cancelled job loses
# that state, and a new job starting from the committed offsets never reads those records
# again (the fault tests saw it: benchmarks/README.md, "Fault tests"). Restoring the checkpoint
# restores the buffer together with the reader's offsets, so nothing is lost; the records read
# after the checkpoint are read again (duplicates, removable by uuid).
#
# With --checkpoint_dir DIR the job keeps its checkpoints under DIR (also after a cancel) and,
# at start, resumes from the newest one found there (--savepoint_path, which Beam's Flink
# runner honours when submitting to a cluster, --flink_master=host:port).


SAVEPOINTS = 'savepoints'


def newest_checkpoint(checkpoint_dir: str) -> Optional[str]:
  """The newest complete retained checkpoint (``<job id>/chk-<n>``) or savepoint
  (``savepoints/savepoint-...``, :func:`stop_with_savepoint`) under ``checkpoint_dir``, a local
  path or ``s3://...``: complete once Flink has written its ``_metadata``; None without one."""
  if '://' in checkpoint_dir:
    patterns = [FileSystems.join(checkpoint_dir, '*', 'chk-*', '_metadata'),
                FileSystems.join(checkpoint_dir, SAVEPOINTS, 'savepoint-*', '_metadata')]
    found = [(m.last_updated_in_seconds, m.path) for pattern in patterns
             for m in FileSystems.match([pattern])[0].metadata_list]
    return FileSystems.split(max(found)[1])[0] if found else None
  found = (glob.glob(os.path.join(checkpoint_dir, '*', 'chk-*', '_metadata')) +
           glob.glob(os.path.join(checkpoint_dir, SAVEPOINTS, 'savepoint-*', '_metadata')))
  if not found:
    return None
  return os.path.dirname(max(found, key=os.path.getmtime))


def with_checkpoint_args(argv: Sequence[str]) -> list[str]:
  """The part of :func:`with_runner_defaults` that keeps checkpoints under
  ``--checkpoint_dir`` and resumes from the newest one (unless ``--savepoint_path`` is given).

  Without ``--checkpoint_dir``, a checkpointing job on the embedded Flink still gets a
  filesystem state backend (in a temporary folder, neither kept nor resumed from): Flink's
  default keeps checkpoints in the JobManager's memory, at most 5 MB each, less than one roll
  of buffered archive rows at a high input rate; each failed checkpoint restarted the job
  (benchmarks/README.md, "Soak"). A cluster's own state backend configuration is left alone.
  """
  argv = list(argv)
  directory = _value(argv, CHECKPOINT_DIR_FLAG)
  checkpointing = int(_value(argv, '--checkpointing_interval') or -1) > 0
  if not directory:
    if (is_embedded(_value(argv, '--flink_master')) and checkpointing
        and _value(argv, '--state_backend') is None):
      folder = tempfile.mkdtemp(prefix=_TEMPORARY_PREFIX)
      argv += ['--state_backend=filesystem', f'--state_backend_storage_path=file://{folder}']
    return argv
  if not checkpointing:
    raise SystemExit(f'{CHECKPOINT_DIR_FLAG} needs --checkpointing_interval=<ms>')
  if directory.startswith('s3://'):
    # Flink writes there through its S3 plugin (FLINK_PLUGINS_DIR, its s3.* settings); this
    # process lists it through Beam's S3 file system, set up from the same flags as the job's.
    storage.configure(PipelineOptions(argv))
    url = directory.rstrip('/')
  elif '://' in directory:
    raise SystemExit(f'{CHECKPOINT_DIR_FLAG} takes a local path or s3://..., not {directory}')
  else:
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    url = f'file://{directory}'
  argv += ['--state_backend=filesystem', f'--state_backend_storage_path={url}',
           '--externalized_checkpoints_enabled',
           '--retain_externalized_checkpoints_on_cancellation']
  resume = newest_checkpoint(url if '://' in directory else directory)
  if resume and _value(argv, '--savepoint_path') is None:
    # The new job's graph is the same; allow dropping state of a transform no longer there.
    argv += [f'--savepoint_path={resume}', '--allow_non_restored_state']
  return argv


def remove_temporary_storage(argv: Sequence[str]) -> None:
  """Deletes the temporary state backend folder :func:`with_checkpoint_args` made for
  ``argv``, once the job is over: streaming jobs checkpoint by default, and each run would
  leave one behind. A folder the user named is never touched."""
  path = _value(argv, '--state_backend_storage_path') or ''
  local = path.removeprefix('file://')
  if (path.startswith('file://') and os.path.dirname(local) == tempfile.gettempdir()
      and os.path.basename(local).startswith(_TEMPORARY_PREFIX)):
    shutil.rmtree(local, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The job server
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def job_server(argv: Sequence[str], kafka_expansion: bool = False) -> Iterator[list[str]]:
  """``argv`` (with :func:`with_runner_defaults` applied) for the span of a ``with`` block,
  plus ``--job_endpoint`` of a job server of our own when it runs on Flink without one; ours
  listens on loopback only and stops with the block (Beam's own binds all interfaces and can
  outlive the run, see :func:`flink_job_server`). When the block ends, the temporary state
  folder the defaults made is removed too.

  ``kafka_expansion``: the job has Kafka transforms. Unless ``argv`` names an expansion service
  already, a Flink job server of ours serves their expansion as well, and ``argv`` gets its
  ``--expansion_service``: one JVM start fewer than the job starting a service of its own."""
  argv = list(argv)
  kafka_expansion = kafka_expansion and not _value(argv, EXPANSION_SERVICE_FLAG)
  try:
    options = PipelineOptions(argv)
    if options.view_as(PortableOptions).job_endpoint or not (is_flink(options) or
                                                             is_spark(options)):
      yield argv
    elif is_spark(options):
      with spark_job_server(argv) as with_endpoint:
        yield with_endpoint
    elif submits_uber_jar(options):
      # Beam's FlinkUberJarJobServer, in this process: no job-server JVM (docs/RUNTIME.md).
      yield argv
    else:
      with flink_job_server(argv, kafka_expansion=kafka_expansion) as with_endpoint:
        yield with_endpoint
  finally:
    remove_temporary_storage(argv)


class _InScratchFolder:
  """A job server whose files are in a scratch folder of its own (pipelines/scratch.py), out
  of the shared temporary folder: the artifacts the job stages, and, as the JVM's
  ``java.io.tmpdir``, the embedded Flink's MiniCluster folders, the RPC jar it unpacks and
  native libraries, a local Spark's block manager."""

  _scratch: str

  def local_temp_dir(self, **kwargs) -> str:
    return tempfile.mkdtemp(dir=self._scratch, **kwargs)

  def in_scratch_folder(self, cmd: list[str]) -> list[str]:
    """``cmd``, a ``java`` command line (Beam's: the launcher first), with the folder as
    the JVM's temporary folder."""
    return [cmd[0], f'-Djava.io.tmpdir={self._scratch}', *cmd[1:]]


class _LoopbackFlinkJobServer(_InScratchFolder, FlinkJarJobServer):
  """Beam's job server with every server it starts bound to loopback: the job server jar
  behind a replacement of Beam's ServerFactory (jvm/loopback/), and, for an embedded Flink,
  a Flink configuration that binds the MiniCluster's own ports there."""

  def __init__(self, options: PipelineOptions, conf_dir: Optional[str], scratch_folder: str,
               expansion_port: Optional[int] = None):
    self._conf_dir, self._scratch = conf_dir, scratch_folder
    self._kafka_expansion_port = expansion_port
    self._s3 = (options.get_all_options(retain_unknown_options=True).get(
        'state_backend_storage_path') or '').startswith('s3://')
    super().__init__(options)

  def java_arguments(self, job_port, artifact_port, expansion_port, artifacts_dir):
    # The job server's own expansion service: unused (KafkaIO has its own, EMBEDDED).
    args = super().java_arguments(job_port, artifact_port, -1, artifacts_dir)
    if self._conf_dir:
      args += ['--flink-conf-dir', self._conf_dir]
    return args

  def subprocess_cmd_and_endpoint(self):
    cmd, endpoint = super().subprocess_cmd_and_endpoint()
    at = cmd.index('-jar')
    jar = cmd[at + 1]
    patch = jvm.loopback_jar('beam-server-factory-loopback', jar, jvm.JOB_SERVER_SOURCES,
                             services=jvm.KAFKA_BATCHES_SERVICES)
    # -cp, not a launcher jar's manifest: the job server stages its class path as the job's
    # jars for a remote cluster, and both must be on it.
    classpath = [patch, jar]
    if self._conf_dir:
      # The embedded MiniCluster does not load plugins from FLINK_PLUGINS_DIR (seen: "The
      # reporter factory ... could not be found"), but finds reporters and file systems on the
      # class path; nothing is staged from it for an embedded Flink.
      classpath += embedded_plugin_jars(self._s3)
    main = [FLINK_JOB_SERVER_MAIN]
    if self._kafka_expansion_port:
      # The Kafka transforms' expansion service in this JVM (the job server jar carries
      # KafkaIO): one JVM start at a job's start instead of two.
      main = [jvm.EXPANSION_MAIN_CLASS, jvm.LOCAL_HOST, str(self._kafka_expansion_port),
              *kafka_io.expansion_service_args(jar), '--', *main]
    cmd[at:at + 2] = ['-cp', os.pathsep.join(classpath), *main]
    return self.in_scratch_folder(cmd), endpoint


def embedded_plugin_jars(s3: bool) -> list[str]:
  """The plugin jars the embedded Flink gets on its class path: the Prometheus reporter, and
  the S3 file system when the state backend is on S3."""
  folders = ['metrics-prometheus'] + (['s3-fs-hadoop'] if s3 else [])
  return sorted(jar for folder in folders
                for jar in glob.glob(os.path.join(FLINK_PLUGINS_DIR, folder, '*.jar')))


def submits_uber_jar(options: PipelineOptions) -> bool:
  """``--flink_submit_uber_jar`` to a cluster: Beam uploads the job server jar with the
  pipeline inside to Flink's REST API itself, with no job server of ours."""
  flink = options.view_as(FlinkRunnerOptions)
  return bool(flink.flink_submit_uber_jar) and not is_embedded(flink.flink_master)


def ships_one_jar(options: PipelineOptions) -> bool:
  """``--flink_submit_uber_jar`` or ``--output_executable_path``: the job reaches Flink as one
  jar with nothing beside it (no class path of the job server's), so by default that jar is
  :func:`transforms.jvm.flink_job_server_app_jar`, which holds the project's Java classes."""
  return (bool(options.view_as(FlinkRunnerOptions).flink_submit_uber_jar) or
          bool(options.view_as(PortableOptions).output_executable_path))


def uber_jar_flink_job(result) -> Optional[str]:
  """The Flink job id of a job submitted with ``--flink_submit_uber_jar``, else None. Beam's
  FlinkUberJarJobServer runs in this process and is the result's job service; its Beam job id
  (``job-<uuid>``) names no Flink job, and its own cancel posts to ``/v1/<jid>/stop``, a path
  Flink does not have (404), so :func:`cancel_flink_job`, :func:`stop_with_savepoint` and the
  summary need the id it keeps."""
  jobs = getattr(getattr(result, '_job_service', None), '_jobs', None)
  job = jobs.get(getattr(result, '_job_id', None)) if isinstance(jobs, dict) else None
  return getattr(job, '_flink_job_id', None)


# The REST API of each embedded Flink of ours, by the --job_endpoint of its job server.
_EMBEDDED_REST: dict[str, str] = {}


def embedded_flink_conf(options: PipelineOptions) -> dict[str, str]:
  """The embedded Flink's configuration: loopback addresses (:data:`EMBEDDED_FLINK_CONF`), a
  REST port of its own (the summary and stop-with-savepoint use it), the Prometheus reporter
  (:data:`METRICS_PORTS_ENV`), and, for ``s3://`` checkpoints, the S3 plugin's endpoint and
  credentials from Beam's S3 flags or the AWS environment, as pipelines/storage.py reads them."""
  conf = dict(EMBEDDED_FLINK_CONF)
  conf['rest.port'] = str(pick_port(None)[0])
  # The REST API serves metrics it fetched from the tasks at most this long ago (10 s default).
  conf['metrics.fetcher.update-interval'] = '2000'
  if os.path.isdir(os.path.join(FLINK_PLUGINS_DIR, 'metrics-prometheus')):
    conf.update(PROMETHEUS_REPORTER)
    conf['metrics.reporter.prom.port'] = (os.environ.get(METRICS_PORTS_ENV) or
                                          str(pick_port(None)[0]))
  storage_path = options.get_all_options(retain_unknown_options=True).get(
      'state_backend_storage_path') or ''
  if storage_path.startswith('s3://'):
    s3 = options.view_as(S3Options)
    settings = {
        's3.endpoint': s3.s3_endpoint_url or os.environ.get('AWS_ENDPOINT_URL_S3') or
                       os.environ.get('AWS_ENDPOINT_URL'),
        's3.access-key': s3.s3_access_key_id or os.environ.get('AWS_ACCESS_KEY_ID'),
        's3.secret-key': s3.s3_secret_access_key or os.environ.get('AWS_SECRET_ACCESS_KEY'),
    }
    conf.update({k: v for k, v in settings.items() if v})
    if settings['s3.endpoint']:
      conf['s3.path.style.access'] = 'true'  # MinIO and most S3-compatible stores
  return conf


class ReusedJobServerOptions(PipelineOptions):
  """For a job on a job server that is kept running (``python -m pipelines.services``)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--flink_rest_url', default=None,
                        help='With --job_endpoint of a running job server on an embedded '
                        'Flink: that Flink\'s REST API (python -m pipelines.services prints '
                        'it), for the end-of-run summary and the startup line.')


def flink_rest_url(options: PipelineOptions) -> Optional[str]:
  """Flink's REST API for a job: the cluster's (``--flink_master=host:port``) or, for an
  embedded Flink of :func:`flink_job_server`, its own (``--flink_rest_url`` for one kept
  running); None off Flink or for a job server that is not ours."""
  if not is_flink(options):
    return None
  master = options.view_as(FlinkRunnerOptions).flink_master
  if not is_embedded(master):
    base = master.strip().rstrip('/')
    return base if base.startswith(('http://', 'https://')) else 'http://' + base
  return (_EMBEDDED_REST.get(options.view_as(PortableOptions).job_endpoint or '') or
          options.view_as(ReusedJobServerOptions).flink_rest_url)


@contextlib.contextmanager
def flink_job_server(pipeline_args: List[str], job_port: Optional[int] = None,
                     rest_port: Optional[int] = None, kafka_expansion: bool = False,
                     expansion_port: Optional[int] = None) -> Iterator[List[str]]:
  """Runs the pinned Flink job server for the span of a ``with`` block.

  Yields ``pipeline_args`` plus ``--job_endpoint=...`` of a job server started for them (its
  ``--flink_master``, ``--flink_job_server_jar``); stops the job server JVM when the block ends.
  Without this, FlinkRunner starts a job server per ``run()`` and stops it only at interpreter
  exit, and that at-exit stop can fail and leave the JVM running (see below): every entry point
  runs one through :func:`job_server`. ``job_port`` / ``rest_port``: fixed ports for the
  job service and the embedded Flink's REST API (pipelines/services.py), else free ones.
  ``kafka_expansion``: the job server's JVM serves the Kafka transforms' expansion too (on
  ``expansion_port``, else a free one), and the arguments yielded name it in
  ``--expansion_service`` (:data:`EXPANSION_SERVICE_FLAG`).
  """
  job_port, = pick_port(job_port)
  expansion_port = pick_port(expansion_port)[0] if kafka_expansion else None
  options = PipelineOptions([*pipeline_args, f'--job_port={job_port}'])
  flink = options.view_as(FlinkRunnerOptions)
  embedded = is_embedded(flink.flink_master)
  flink.flink_master = FlinkRunner.add_http_scheme(flink.flink_master)
  folder = scratch.process_folder('flink-job-server')
  conf_dir = os.path.join(folder, 'conf') if embedded else None
  endpoint = f'localhost:{job_port}'
  if conf_dir:
    os.mkdir(conf_dir)
    conf = embedded_flink_conf(options)
    if rest_port:
      conf['rest.port'] = str(rest_port)
    with open(os.path.join(conf_dir, 'flink-conf.yaml'), 'w', encoding='utf-8') as f:
      f.writelines(f'{key}: {value}\n' for key, value in conf.items())
    _EMBEDDED_REST[endpoint] = f'http://127.0.0.1:{conf["rest.port"]}'
    _LOG.info('embedded Flink REST API: %s', _EMBEDDED_REST[endpoint])
    if 'metrics.reporter.prom.port' in conf:
      _LOG.info('Flink metrics (Prometheus): http://127.0.0.1:%s/metrics',
                conf['metrics.reporter.prom.port'])
  server = _LoopbackFlinkJobServer(options, conf_dir, folder, expansion_port)
  try:
    server.start()  # returns once the job service answers on job_port
  except BaseException:
    shutil.rmtree(folder, ignore_errors=True)
    raise
  expansion = ([f'{EXPANSION_SERVICE_FLAG}={jvm.LOCAL_HOST}:{expansion_port}']
               if expansion_port else [])
  try:
    yield [*pipeline_args, f'--job_endpoint={endpoint}', *expansion]
  finally:
    _EMBEDDED_REST.pop(endpoint, None)
    _stop_job_server(server, folder)


# --------------------------------------------------------------------------------------------
# Spark: Beam's portable Spark 3 runner (batch jobs only; docs/spark.md)
# --------------------------------------------------------------------------------------------
#
# ``--runner=SparkRunner`` runs a job on the pinned Spark job server jar (jvm/beam-spark-job-server,
# Spark 3.5 inside): by default on an embedded ``local[2]`` Spark in the job server JVM, or, with
# ``--spark_master_url=spark://host:7077``, on a standalone cluster (scripts/spark_cluster.sh).
# The Python SDK workers are local processes as on Flink (PROCESS with scripts/sdk_worker.sh, or
# ``--environment_type=LOOPBACK``), never Docker.

SPARK_JOB_SERVER_JAR = f'beam-runners-spark-3-job-server-{jvm.JAVA_BEAM_VERSION}.jar'
SPARK_JOB_SERVER_MAIN = 'org.apache.beam.runners.spark.SparkJobServerDriver'
EMBEDDED_SPARK_MASTER = 'local[2]'
# What a Spark driver on this host binds (scripts/spark_cluster.sh binds the same).
SPARK_LOCAL_IP = '127.0.0.1'

# Why the streaming (Kafka) job cannot run on Beam's portable Spark runner, said before anything
# starts: tried for real with Beam 2.62's job server (docs/spark.md has the log).
SPARK_STREAMING_REFUSAL = (
    'The streaming job (--source=kafka) cannot run on the SparkRunner: Beam\'s portable Spark '
    'runner has no support, in streaming mode, for user state (apache/beam#20396) and timers '
    '(apache/beam#20397), which the host join, the incidents and the volume baselines use, '
    'nor for the unbounded Kafka read: its streaming translator has no translation for a read '
    '(beam:transform:read:v1: the job fails there) and portable runners cannot checkpoint the '
    'unbounded splittable DoFn that the cross-language KafkaIO read is otherwise '
    '(apache/beam#20979). Run the stream job on Flink (--runner=FlinkRunner), or on Spark as a '
    'bounded job with --source=files; see docs/spark.md.')


def is_spark(options: PipelineOptions) -> bool:
  return (options.view_as(StandardOptions).runner or '').lower() in ('sparkrunner', 'spark')


def is_local_spark(master_url: Optional[str]) -> bool:
  """Whether ``--spark_master_url`` is Spark inside the job server JVM (``local``, ``local[N]``,
  ``local[*]``) rather than a cluster's master."""
  return re.match(LOCAL_MASTER_PATTERN, (master_url or EMBEDDED_SPARK_MASTER).strip()) is not None


def spark_job_server_jar(jars_dir: Optional[str] = None) -> str:
  """Path of the pinned Beam Spark 3 job server jar (``--spark_job_server_jar``); raises
  FileNotFoundError, saying how to build it, when it is missing."""
  jar = os.path.join(jvm.jars_dir(jars_dir), SPARK_JOB_SERVER_JAR)
  if not os.path.isfile(jar):
    raise FileNotFoundError(f'{jar} is missing: run scripts/fetch_jars.sh (builds the pinned '
                            'Beam Spark job server with Maven into .cache/jars)')
  return jar


def with_spark_defaults(argv: Sequence[str], kind: str) -> list[str]:
  """The Spark branch of :func:`with_runner_defaults`: the pinned job server jar, the embedded
  ``local[2]`` master, and Python SDK workers as local processes (PROCESS with
  scripts/sdk_worker.sh, one per core), unless the command line says otherwise. Raises
  SystemExit with :data:`SPARK_STREAMING_REFUSAL` for a streaming job, and FileNotFoundError
  (saying how to build it) when the pinned jar is missing."""
  if kind == STREAMING:
    raise SystemExit(SPARK_STREAMING_REFUSAL)
  argv = list(argv)
  given = _given(argv)
  defaults = {
      '--spark_job_server_jar': spark_job_server_jar,
      '--spark_master_url': lambda: EMBEDDED_SPARK_MASTER,
      '--environment_type': lambda: 'PROCESS',
  }
  argv += [f'{flag}={value()}' for flag, value in defaults.items() if flag not in given]
  environment = PipelineOptions(argv).view_as(PortableOptions).environment_type
  if environment == 'PROCESS':
    # Each Spark executor runs its tasks on this many workers; with one, the tasks of all its
    # cores queued on one interpreter.
    _with_process_workers(argv, given, workers_per_core=1)
  return argv


class _LoopbackSparkJobServer(_InScratchFolder, SparkJarJobServer):
  """Beam's Spark job server with its own servers bound to loopback (the ServerFactory of
  jvm/loopback/, as for Flink) and, for an embedded Spark or a master on this host, Spark's
  driver too (SPARK_LOCAL_IP: RPC, block manager and web UI ports). A master elsewhere must
  reach the driver, so there Spark's own binding (or the user's SPARK_LOCAL_IP) stays."""

  def __init__(self, options: PipelineOptions, scratch_folder: str):
    self._scratch = scratch_folder
    super().__init__(options)

  def java_arguments(self, job_port, artifact_port, expansion_port, artifacts_dir):
    # The job server's own expansion service: unused (KafkaIO has its own).
    return super().java_arguments(job_port, artifact_port, -1, artifacts_dir)

  def subprocess_cmd_and_endpoint(self):
    cmd, endpoint = super().subprocess_cmd_and_endpoint()
    at = cmd.index('-jar')
    jar = cmd[at + 1]
    patch = jvm.loopback_jar('beam-server-factory-loopback', jar, [jvm.SERVER_FACTORY_SOURCE])
    cmd[at:at + 2] = ['-cp', f'{patch}{os.pathsep}{jar}', SPARK_JOB_SERVER_MAIN]
    master = self._master_url or ''
    cmd = self.in_scratch_folder(cmd)
    if is_local_spark(master) or _on_this_host(master):
      cmd[:0] = ['env', f'SPARK_LOCAL_IP={SPARK_LOCAL_IP}']
    return cmd, endpoint


def _on_this_host(spark_master_url: str) -> bool:
  host = urllib.parse.urlparse(spark_master_url).hostname or ''
  return host in ('localhost', SPARK_LOCAL_IP)


@contextlib.contextmanager
def spark_job_server(pipeline_args: List[str]) -> Iterator[List[str]]:
  """Runs the pinned Spark job server for the span of a ``with`` block: yields
  ``pipeline_args`` plus ``--job_endpoint=...`` and stops the JVM when the block ends (the same
  reasons and the same stop order as :func:`flink_job_server`)."""
  job_port, = pick_port(None)
  options = PipelineOptions([*pipeline_args, f'--job_port={job_port}'])
  folder = scratch.process_folder('spark-job-server')
  server = _LoopbackSparkJobServer(options, folder)
  try:
    server.start()  # returns once the job service answers on job_port
  except BaseException:
    shutil.rmtree(folder, ignore_errors=True)
    raise
  try:
    yield [*pipeline_args, f'--job_endpoint=localhost:{job_port}']
  finally:
    _stop_job_server(server, folder)


def _stop_job_server(server, scratch_folder: str) -> None:
  """Stops a Beam job server JVM, then removes its artifacts and scratch folders.

  Beam's own stop() deletes the artifacts temp dir BEFORE stopping the JVM; when the JVM is
  still writing there, rmtree raises and the job server JVM is left running (orphaned JVMs
  seen here after FlinkRunner's at-exit stop). So: the JVM first, then the directories."""
  process = getattr(server, '_server', None)
  temp_root = getattr(server, '_local_temp_root', None)
  if process is None:
    server.stop()
  else:
    process.stop()
    if temp_root:
      shutil.rmtree(temp_root, ignore_errors=True)
  shutil.rmtree(scratch_folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Stopping a job
# --------------------------------------------------------------------------------------------


def cancel(result, options: PipelineOptions) -> None:
  """Cancels a running job (on a Flink session cluster too, and on the embedded Flink of a job
  server kept running, ``--flink_rest_url``: there too the Flink job outlives a Beam cancel)."""
  if is_flink(options):
    reused = options.view_as(ReusedJobServerOptions).flink_rest_url
    cancel_flink_job(result, reused or options.view_as(FlinkRunnerOptions).flink_master)
  else:
    result.cancel()


def cancel_flink_job(result, flink_master: Optional[str] = None, timeout_s: float = 30.0) -> None:
  """Cancels a running Beam job on Flink, including the Flink job on a session cluster.

  ``result.cancel()`` alone stops the Beam job invocation, but with a remote ``flink_master`` the
  Flink job keeps running on the cluster (seen with Beam 2.62's job server on Flink 1.19). So for
  ``host:port`` masters this also cancels, through Flink's REST API, every running Flink job named
  after the Beam job, and waits (up to ``timeout_s``) until Flink reports it cancelled.
  """
  job_id = getattr(result, '_job_id', None) or ''
  try:
    result.cancel()
  except Exception as e:  # pylint: disable=broad-except
    _LOG.warning('Beam cancel of %s failed (%s); cancelling on Flink directly', job_id, e)
  if is_embedded(flink_master) or not job_id:
    return
  base = flink_master.strip().rstrip('/')
  if not base.startswith(('http://', 'https://')):
    base = 'http://' + base
  name = job_id.rsplit('_', 1)[0]  # invocation id = <job name>_<uuid>
  uber = uber_jar_flink_job(result)

  def running():
    with urllib.request.urlopen(f'{base}/jobs/overview', timeout=5) as r:
      jobs = json.load(r)['jobs']
    return [j['jid'] for j in jobs if (j['jid'] == uber if uber else j.get('name') == name) and
            j.get('state') not in ('CANCELED', 'FAILED', 'FINISHED')]

  deadline = time.monotonic() + timeout_s
  try:
    jids = running()
    for jid in jids:
      req = urllib.request.Request(f'{base}/jobs/{jid}?mode=cancel', method='PATCH')
      urllib.request.urlopen(req, timeout=5).close()  # pylint: disable=consider-using-with
    while jids and time.monotonic() < deadline:
      jids = running()
      if jids:
        time.sleep(0.3)
  except (urllib.error.URLError, ConnectionError) as e:
    # The embedded Flink of a job server kept running (--flink_rest_url) shuts down with its
    # last job, so after the Beam cancel nothing may answer there: the job is gone with it.
    _LOG.warning('could not reach Flink at %s to confirm that %s is cancelled (%s); if it '
                 'runs on a cluster, check there', base, name, e)
    return
  if jids:
    raise TimeoutError(f'Flink jobs {jids} of {name} still not cancelled after {timeout_s}s')


def _rest(base: str, path: str, body: Optional[dict] = None) -> dict:
  data = None if body is None else json.dumps(body).encode()
  request = urllib.request.Request(base + path, data=data, method='GET' if data is None else 'POST',
                                   headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=10) as r:
    return json.load(r)


def running_flink_job(base: str, beam_job_id: str) -> Optional[str]:
  """The id of the running Flink job of a Beam job (named after it: the invocation id is
  ``<job name>_<uuid>``), from the REST API at ``base``; None when there is none."""
  name = beam_job_id.rsplit('_', 1)[0]
  jobs = [j for j in _rest(base, '/jobs/overview')['jobs']
          if j.get('name') == name and j.get('state') in ('RUNNING', 'CREATED', 'RESTARTING')]
  return max(jobs, key=lambda j: j['start-time'])['jid'] if jobs else None


def stop_with_savepoint(result, options: PipelineOptions, target_dir: str,
                        timeout_s: float = 180.0) -> str:
  """Stops a running Beam job on Flink with a savepoint under ``target_dir`` (local path or
  ``s3://...``), through Flink's REST API (``POST /jobs/<id>/stop``, no drain: the windows and
  buffers stay in the savepoint rather than being flushed as if the input had ended); returns
  the savepoint's path once Flink reports it complete, and waits for the job to end. On the
  embedded Flink of :func:`flink_job_server` and on a session cluster alike."""
  base = flink_rest_url(options)
  if base is None:
    raise ValueError('stop-with-savepoint needs Flink\'s REST API: a job on --runner=FlinkRunner '
                     'with a job server of ours or --flink_master=host:port')
  job_id = getattr(result, '_job_id', None) or ''
  deadline = time.monotonic() + timeout_s
  # A job just submitted reaches Flink only once the job server has translated it.
  while (jid := uber_jar_flink_job(result) or running_flink_job(base, job_id)) is None:
    if PipelineState.is_terminal(result.state) or time.monotonic() > deadline:
      raise RuntimeError(f'no running Flink job for {job_id} at {base} (Beam: {result.state})')
    time.sleep(1)
  if not target_dir.startswith('s3://') and '://' not in target_dir:
    target_dir = 'file://' + os.path.abspath(target_dir)
  trigger = _rest(base, f'/jobs/{jid}/stop', {'targetDirectory': target_dir, 'drain': False})
  while True:
    status = _rest(base, f'/jobs/{jid}/savepoints/{trigger["request-id"]}')
    if status['status']['id'] == 'COMPLETED':
      operation = status.get('operation') or {}
      if 'location' not in operation:
        raise RuntimeError(f'stop-with-savepoint of Flink job {jid} failed: '
                           f'{operation.get("failure-cause", operation)}')
      break
    if time.monotonic() > deadline:
      raise TimeoutError(f'stop-with-savepoint of Flink job {jid} not done after {timeout_s}s')
    time.sleep(0.5)
  try:
    result.wait_until_finish(duration=int(max(1.0, deadline - time.monotonic()) * 1000))
  except RuntimeError as e:  # Beam reports a stopped job as it sees it; the savepoint is done
    _LOG.info('after stop-with-savepoint: %s', e)
  _LOG.info('stopped Flink job %s with savepoint %s', jid, operation['location'])
  return operation['location']
