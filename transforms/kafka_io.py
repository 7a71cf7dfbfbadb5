"""Kafka in and out of the Beam pipeline, and the Flink options to run it without Docker.

KafkaIO is a Java transform: Python expands it through Beam's IO expansion service and the Flink
runner executes it. The JVM pieces are pinned and built by ``scripts/fetch_jars.sh`` into
``.cache/jars/`` (see ``jvm/pom.xml`` and ``docs/RUNTIME.md`` for why they are Beam Java 2.62.0 on
Flink 1.19 while the Python SDK is 2.77.0)::

    .cache/jars/beam-runners-flink-1.19-job-server-2.62.0.jar   (job server; also carries KafkaIO)
    .cache/jars/beam-sdks-java-io-expansion-service-2.62.0.jar  (expansion service for KafkaIO)

How it runs with no Docker anywhere:

* the expansion service is started with ``--defaultEnvironmentType=EMBEDDED`` and
  ``--experiments=use_deprecated_read``: the Kafka reader becomes Flink's native unbounded source
  (``UnboundedSourceWrapper``) and the few Java DoFns around it (KafkaRecord -> Row, the writer) run
  in a Java SDK harness *inside the Flink JVM*. Their classes come from the job server jar, which
  Flink gets as the job's user jar (on a remote cluster the job server uploads it with the job);
* the Python DoFns run in a Python SDK harness reached through ``LOOPBACK`` (inside the submitting
  process: local runs, tests, a cluster on the same host) or ``EXTERNAL`` (a worker pool beside each
  TaskManager: a real cluster). See :func:`flink_pipeline_options`.

Every server these JVMs start listens on loopback only (:func:`flink_job_server`,
:func:`expansion_service`; Beam itself binds all interfaces, see docs/RUNTIME.md).

Element type out of :class:`ReadKafkaMessages`: :class:`transforms.source.SourceMessage`, with the
element timestamp set from the Kafka record timestamp.

Secrets (SASL passwords, JAAS lines, key store passwords) are passed through to Kafka untouched and
never logged by this module; use :func:`redact_config` for anything you want to print.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import shutil
import subprocess
import tempfile
import typing
import zipfile
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam.io.kafka import ReadFromKafka, ReadFromKafkaSchema, WriteToKafka
from apache_beam.transforms.external import JavaJarExpansionService, NamedTupleBasedPayloadBuilder
from apache_beam.transforms.window import TimestampedValue

from pipelines import kafka_config
from transforms.source import SourceMessage

_LOG = logging.getLogger(__name__)

# The pinned JVM side (jvm/pom.xml). Keep in step with scripts/fetch_jars.sh.
JAVA_BEAM_VERSION = '2.62.0'
FLINK_VERSION = '1.19'
JOB_SERVER_JAR = f'beam-runners-flink-{FLINK_VERSION}-job-server-{JAVA_BEAM_VERSION}.jar'
EXPANSION_SERVICE_JAR = f'beam-sdks-java-io-expansion-service-{JAVA_BEAM_VERSION}.jar'

# Arguments that make the expanded KafkaIO runnable inside the Flink JVM (no Docker, no `boot`).
EXPANSION_SERVICE_ARGS = ('--defaultEnvironmentType=EMBEDDED', '--experiments=use_deprecated_read')

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Java sources that keep the JVM servers on loopback (see _loopback_jar, docs/RUNTIME.md).
_LOOPBACK_SOURCES = os.path.join(_REPO_ROOT, 'jvm', 'loopback')
_SERVER_FACTORY_SOURCE = 'org/apache/beam/sdk/fn/server/ServerFactory.java'
_EXPANSION_MAIN_SOURCE = 'LoopbackExpansionService.java'
FLINK_JOB_SERVER_MAIN = 'org.apache.beam.runners.flink.FlinkJobServerDriver'
# What the local JVMs bind: the name Beam itself puts in every URL it hands out.
LOCAL_HOST = 'localhost'

# The embedded Flink (MiniCluster) of a [local] job server: its own ports on loopback (with
# Flink's defaults some of them listen on all interfaces).
EMBEDDED_FLINK_CONF = {
    'jobmanager.rpc.address': LOCAL_HOST,
    'jobmanager.bind-host': LOCAL_HOST,
    'taskmanager.host': LOCAL_HOST,
    'taskmanager.bind-host': LOCAL_HOST,
    'rest.address': LOCAL_HOST,
    'rest.bind-address': LOCAL_HOST,
}

# One home for the list of secret settings (pipelines/kafka_config.py); re-exported here.
redact_config = kafka_config.redact_config


# --------------------------------------------------------------------------------------------
# Jars and options
# --------------------------------------------------------------------------------------------


def jars_dir(path: Optional[str] = None) -> str:
  """The folder holding the pinned jars: ``path``, else $BEAM_JARS_DIR, else <repo>/.cache/jars."""
  return os.path.abspath(path or os.environ.get('BEAM_JARS_DIR') or
                         os.path.join(_REPO_ROOT, '.cache', 'jars'))


def _jar(name: str, path: Optional[str]) -> str:
  jar = os.path.join(jars_dir(path), name)
  if not os.path.isfile(jar):
    raise FileNotFoundError(
        f'{jar} is missing: run scripts/fetch_jars.sh (builds the pinned Beam/Flink/Kafka jars '
        f'with Maven into .cache/jars)')
  return jar


def flink_job_server_jar(jars_dir: Optional[str] = None) -> str:  # pylint: disable=redefined-outer-name
  """Path of the pinned Beam Flink job server jar (``--flink_job_server_jar``)."""
  return _jar(JOB_SERVER_JAR, jars_dir)


def io_expansion_service_jar(jars_dir: Optional[str] = None) -> str:  # pylint: disable=redefined-outer-name
  """Path of the pinned Beam IO expansion service jar (KafkaIO)."""
  return _jar(EXPANSION_SERVICE_JAR, jars_dir)


_EXPANSION_SERVICES: Dict[str, JavaJarExpansionService] = {}


def expansion_service(jars_dir: Optional[str] = None) -> JavaJarExpansionService:  # pylint: disable=redefined-outer-name
  """The expansion service for KafkaIO, on the pinned jar, set up for the EMBEDDED environment.

  One object per jar: Beam starts the Java process lazily when a transform is expanded, reuses it
  for the other Kafka transforms of the same pipeline, and stops it afterwards.
  """
  jar = io_expansion_service_jar(jars_dir)
  service = _EXPANSION_SERVICES.get(jar)
  if service is None:
    # Beam's own main listens on all interfaces; the launcher binds LOCAL_HOST.
    launcher = _loopback_jar('expansion-service-loopback', jar, [_EXPANSION_MAIN_SOURCE],
                             main_class='LoopbackExpansionService')
    # ``{{PORT}}`` is filled in by Beam. ``--filesToStage`` names what the expanded environment
    # declares as its artifacts; an EMBEDDED environment never loads them (its classes come from
    # the job server jar), so staging the 130 MB expansion jar itself would only cost time at each
    # submission. The smallest real jar we have stands in for it.
    service = JavaJarExpansionService(
        launcher,
        extra_args=[LOCAL_HOST, '{{PORT}}', f'--filesToStage={_stage_marker(jar)}',
                    *EXPANSION_SERVICE_ARGS])
    _EXPANSION_SERVICES[jar] = service
  return service


def _stage_marker(expansion_jar: str) -> str:
  marker = os.path.join(os.path.dirname(expansion_jar), 'embedded-environment-marker.jar')
  if not os.path.isfile(marker):
    import zipfile  # pylint: disable=import-outside-toplevel
    tmp = f'{marker}.{os.getpid()}.tmp'
    with zipfile.ZipFile(tmp, 'w') as jar:
      jar.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\n')
      jar.writestr('README.txt', 'KafkaIO runs EMBEDDED in the Flink JVM; this jar is never loaded.\n')
    os.replace(tmp, marker)
  return marker


def _loopback_jar(name: str, against: str, sources: List[str],
                  main_class: Optional[str] = None) -> str:
  """``sources`` (paths under jvm/loopback/) compiled against the jar ``against``, once, into
  ``<name>-<hash>.jar`` beside it. With ``main_class`` the jar runs with ``java -jar`` (its
  manifest puts ``against`` on the class path). Raises FileNotFoundError without ``javac``."""
  paths = [os.path.join(_LOOPBACK_SOURCES, source) for source in sources]
  digest = hashlib.sha256(os.path.basename(against).encode())
  for path in paths:
    with open(path, 'rb') as f:
      digest.update(f.read())
  jar = os.path.join(os.path.dirname(against), f'{name}-{digest.hexdigest()[:12]}.jar')
  if os.path.isfile(jar):
    return jar
  javac = shutil.which('javac')
  if javac is None:
    raise FileNotFoundError('javac is missing: the JVM servers are kept on loopback by classes '
                            'compiled from jvm/loopback/ at first use; install a JDK (17)')
  with tempfile.TemporaryDirectory() as classes:
    # Java 8 class files, like Beam's own, so that a cluster on an older JVM loads them too.
    built = subprocess.run([javac, '--release', '8', '-nowarn', '-cp', against, '-d', classes,
                            *paths], capture_output=True, text=True, check=False)
    if built.returncode != 0:
      raise RuntimeError(f'javac failed on {", ".join(sources)}:\n{built.stderr}')
    manifest = 'Manifest-Version: 1.0\n'
    if main_class:
      manifest += f'Main-Class: {main_class}\nClass-Path: {os.path.basename(against)}\n'
    tmp = f'{jar}.{os.getpid()}.tmp'
    with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_DEFLATED) as out:
      out.writestr('META-INF/MANIFEST.MF', manifest)
      for root, _, files in os.walk(classes):
        for file in sorted(files):
          out.write(os.path.join(root, file),
                    os.path.relpath(os.path.join(root, file), classes))
    os.replace(tmp, jar)
  return jar


def flink_pipeline_options(
    flink_master: str = '[local]',
    *,
    environment_type: Optional[str] = None,
    environment_config: Optional[str] = None,
    parallelism: Optional[int] = None,
    streaming: bool = True,
    checkpointing_interval_ms: Optional[int] = None,
    jars_dir: Optional[str] = None,  # pylint: disable=redefined-outer-name
) -> List[str]:
  """Pipeline arguments to run on Flink with the pinned job server and no Docker.

  ``flink_master``: ``[local]`` runs an embedded Flink MiniCluster inside the job server JVM;
  ``host:port`` (e.g. ``localhost:8081``, see scripts/flink_cluster.sh) submits to a session
  cluster's REST endpoint.

  ``environment_type`` (the Python SDK harness):

  * ``LOOPBACK`` (default): the harness runs inside the submitting Python process and Flink calls
    back into it. Right for ``[local]``, tests, and a cluster whose TaskManagers run on this host.
    The submitting process must stay alive while the job runs.
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
      f'--flink_version={FLINK_VERSION}',
      f'--flink_job_server_jar={flink_job_server_jar(jars_dir)}',
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


@contextlib.contextmanager
def flink_job_server(pipeline_args: List[str]) -> Iterator[List[str]]:
  """Runs the pinned Flink job server for the span of a ``with`` block.

  Yields ``pipeline_args`` plus ``--job_endpoint=...`` of a job server started for them (its
  ``--flink_master``, ``--flink_job_server_jar``); stops the job server JVM when the block ends.
  Without this, FlinkRunner starts a job server per ``run()`` and stops it only at interpreter
  exit, and that at-exit stop can fail and leave the JVM running (see below): use this in every
  entry point, the stream job included.
  """
  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions
  from apache_beam.runners.portability.flink_runner import FlinkJarJobServer, FlinkRunner

  from apache_beam.utils.subprocess_server import pick_port

  class LoopbackFlinkJobServer(FlinkJarJobServer):
    """Beam's job server with every server it starts bound to loopback: the job server jar
    behind a replacement of Beam's ServerFactory (jvm/loopback/), and, for an embedded Flink,
    a Flink configuration that binds the MiniCluster's own ports there."""

    def java_arguments(self, job_port, artifact_port, expansion_port, artifacts_dir):
      # The job server's own expansion service: unused (KafkaIO has its own, EMBEDDED).
      args = super().java_arguments(job_port, artifact_port, -1, artifacts_dir)
      if conf_dir:
        args += ['--flink-conf-dir', conf_dir]
      return args

    def subprocess_cmd_and_endpoint(self):
      cmd, endpoint = super().subprocess_cmd_and_endpoint()
      at = cmd.index('-jar')
      jar = cmd[at + 1]
      patch = _loopback_jar('beam-server-factory-loopback', jar, [_SERVER_FACTORY_SOURCE])
      # -cp, not a launcher jar's manifest: the job server stages its class path as the job's
      # jars for a remote cluster, and both must be on it.
      cmd[at:at + 2] = ['-cp', f'{patch}{os.pathsep}{jar}', FLINK_JOB_SERVER_MAIN]
      return cmd, endpoint

  job_port, = pick_port(None)
  options = PipelineOptions([*pipeline_args, f'--job_port={job_port}'])
  flink = options.view_as(FlinkRunnerOptions)
  embedded = (flink.flink_master or '[auto]').strip() in ('[local]', '[auto]')
  flink.flink_master = FlinkRunner.add_http_scheme(flink.flink_master)
  conf_dir = tempfile.mkdtemp(prefix='flink-conf-') if embedded else None
  if conf_dir:
    with open(os.path.join(conf_dir, 'flink-conf.yaml'), 'w', encoding='utf-8') as f:
      f.writelines(f'{key}: {value}\n' for key, value in EMBEDDED_FLINK_CONF.items())
  server = LoopbackFlinkJobServer(options)
  try:
    server.start()  # returns once the job service answers on job_port
  except BaseException:
    if conf_dir:
      shutil.rmtree(conf_dir, ignore_errors=True)
    raise
  try:
    yield [*pipeline_args, f'--job_endpoint=localhost:{job_port}']
  finally:
    # Beam's own stop() deletes the artifacts temp dir BEFORE stopping the JVM; when the JVM is
    # still writing there, rmtree raises and the job server JVM is left running (orphaned JVMs
    # seen here after FlinkRunner's at-exit stop). So: the JVM first, then the directory.
    process = getattr(server, '_server', None)
    temp_root = getattr(server, '_local_temp_root', None)
    if process is None:
      server.stop()
    else:
      process.stop()
      if temp_root:
        shutil.rmtree(temp_root, ignore_errors=True)
    if conf_dir:
      shutil.rmtree(conf_dir, ignore_errors=True)


def cancel_flink_job(result, flink_master: Optional[str] = None, timeout_s: float = 30.0) -> None:
  """Cancels a running Beam job on Flink, including the Flink job on a session cluster.

  ``result.cancel()`` alone stops the Beam job invocation, but with a remote ``flink_master`` the
  Flink job keeps running on the cluster (seen with Beam 2.62's job server on Flink 1.19). So for
  ``host:port`` masters this also cancels, through Flink's REST API, every running Flink job named
  after the Beam job, and waits (up to ``timeout_s``) until Flink reports it cancelled.
  """
  import json  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  import urllib.request  # pylint: disable=import-outside-toplevel

  job_id = getattr(result, '_job_id', None) or ''
  try:
    result.cancel()
  except Exception as e:  # pylint: disable=broad-except
    _LOG.warning('Beam cancel of %s failed (%s); cancelling on Flink directly', job_id, e)
  if not flink_master or flink_master.strip() in ('[local]', '[auto]') or not job_id:
    return
  base = flink_master.strip().rstrip('/')
  if not base.startswith(('http://', 'https://')):
    base = 'http://' + base
  name = job_id.rsplit('_', 1)[0]  # invocation id = <job name>_<uuid>

  def running():
    with urllib.request.urlopen(f'{base}/jobs/overview', timeout=5) as r:
      jobs = json.load(r)['jobs']
    return [j['jid'] for j in jobs if j.get('name') == name and
            j.get('state') not in ('CANCELED', 'FAILED', 'FINISHED')]

  deadline = time.monotonic() + timeout_s
  jids = running()
  for jid in jids:
    req = urllib.request.Request(f'{base}/jobs/{jid}?mode=cancel', method='PATCH')
    urllib.request.urlopen(req, timeout=5).close()  # pylint: disable=consider-using-with
  while jids and time.monotonic() < deadline:
    jids = running()
    if jids:
      time.sleep(0.3)
  if jids:
    raise TimeoutError(f'Flink jobs {jids} of {name} still not cancelled after {timeout_s}s')


# --------------------------------------------------------------------------------------------
# Compatibility of the Python 2.77 KafkaIO wrappers with the Java 2.62 expansion service
# --------------------------------------------------------------------------------------------


def _payload_without_unset_fields(schema_instance: typing.NamedTuple) -> bytes:
  """The external-transform payload with every ``None`` field left out.

  The Java side builds its configuration object by calling one setter per field present in the
  payload and fails on a field it does not know. apache-beam 2.77's ``ReadFromKafka`` always sends
  three fields Java 2.62 lacks (dynamic_read_poll_interval_seconds, consumer_factory_fn_class,
  consumer_factory_fn_params), all ``None`` unless used. A missing field and a ``None`` one mean
  the same to Java (the setter is not called), so dropping them works with old and new Java alike.
  """
  hints = typing.get_type_hints(type(schema_instance))
  kept = {k: v for k, v in schema_instance._asdict().items() if v is not None}
  reduced = typing.NamedTuple(type(schema_instance).__name__, [(k, hints[k]) for k in kept])
  return NamedTupleBasedPayloadBuilder(reduced(**kept)).payload()


def _read_from_kafka(**kwargs) -> ReadFromKafka:
  """``ReadFromKafka(**kwargs)`` whose payload the pinned Java expansion service accepts."""
  transform = ReadFromKafka(**kwargs)
  defaults = {
      name: p.default
      for name, p in inspect.signature(ReadFromKafka.__init__).parameters.items()
      if p.default is not inspect.Parameter.empty
  }
  values = {**defaults, **kwargs}
  schema = ReadFromKafkaSchema(**{f: values[f] for f in ReadFromKafkaSchema._fields})
  transform._payload = _payload_without_unset_fields(schema)  # pylint: disable=protected-access
  return transform


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _client_config(bootstrap_servers: str, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
  if not bootstrap_servers:
    raise ValueError('bootstrap_servers is required')
  config = {str(k): str(v) for k, v in (extra or {}).items()}
  config['bootstrap.servers'] = bootstrap_servers
  return config


def _to_source_message(record, stream_by_topic: Mapping[str, str]):
  """A KafkaIO metadata Row -> a timestamped SourceMessage."""
  topic = record.topic
  timestamp_ms = int(record.timestamp) if record.timestamp is not None else None
  message = SourceMessage(
      stream=stream_by_topic.get(topic, topic),
      value=bytes(record.value) if record.value is not None else b'',
      source=topic,
      partition=int(record.partition),
      offset=int(record.offset),
      timestamp_ms=timestamp_ms,
      key=bytes(record.key) if record.key is not None else None,
  )
  if timestamp_ms is None or timestamp_ms < 0:
    return message
  return TimestampedValue(message, timestamp_ms / 1000.0)


class ReadKafkaMessages(beam.PTransform):
  """Reads Kafka topics into :class:`SourceMessage` elements, timestamped by the Kafka record time.

  Args:
    bootstrap_servers: ``host:port[,host:port]``.
    topics: ``{topic: stream_name}``, e.g. ``{'sensor_messages': 'network'}``; the stream name
      becomes ``SourceMessage.stream``.
    consumer_config: extra Kafka consumer settings, passed through unchanged (Java client names:
      ``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``, ``ssl.truststore.location``,
      ``ssl.truststore.type`` (``PEM`` works for PEM files), ...). Values are never logged here.
    group_id: the consumer group (``group.id``); needed for ``commit_offsets``.
    start_offset: ``earliest`` or ``latest``: where to start without a committed offset
      (``auto.offset.reset``; an explicit value in ``consumer_config`` wins).
    commit_offsets: commit consumed offsets when Flink finalizes a checkpoint (needs ``group_id``
      and checkpointing, see :func:`flink_pipeline_options`).
    timestamp_policy: ``CreateTime`` (default: the producer's record time, which the generator
      sets to the event time), ``LogAppendTime`` or ``ProcessingTime``.
    max_num_records / max_read_time_s: make the read bounded (demos and tests only).
    expansion_service: defaults to :func:`expansion_service`.
  """

  def __init__(
      self,
      bootstrap_servers: str,
      topics: Mapping[str, str],
      consumer_config: Optional[Mapping[str, str]] = None,
      *,
      group_id: Optional[str] = None,
      start_offset: str = 'earliest',
      commit_offsets: bool = False,
      timestamp_policy: str = ReadFromKafka.create_time_policy,
      max_num_records: Optional[int] = None,
      max_read_time_s: Optional[int] = None,
      expansion_service: Optional[JavaJarExpansionService] = None,  # pylint: disable=redefined-outer-name
      label: Optional[str] = None):
    super().__init__(label)
    if not topics:
      raise ValueError('topics must name at least one topic')
    if start_offset not in ('earliest', 'latest'):
      raise ValueError("start_offset must be 'earliest' or 'latest'")
    if commit_offsets and not (group_id or (consumer_config or {}).get('group.id')):
      raise ValueError('commit_offsets needs a group_id')
    self._topics = dict(topics)
    config = _client_config(bootstrap_servers, consumer_config)
    config.setdefault('auto.offset.reset', start_offset)
    if group_id:
      config['group.id'] = group_id
    if commit_offsets:
      # Offsets are committed when Flink finalizes a checkpoint; the consumer's own periodic
      # auto-commit (Kafka's default with a group.id) would commit what is not yet processed.
      config.setdefault('enable.auto.commit', 'false')
    self._config = config
    self._commit = commit_offsets
    self._timestamp_policy = timestamp_policy
    self._max_num_records = max_num_records
    self._max_read_time_s = max_read_time_s
    self._expansion_service = expansion_service

  def __repr__(self):  # never show the consumer config (secrets)
    return f'ReadKafkaMessages(topics={sorted(self._topics)})'

  def expand(self, pbegin):
    read = _read_from_kafka(
        consumer_config=self._config,
        topics=sorted(self._topics),
        with_metadata=True,
        timestamp_policy=self._timestamp_policy,
        commit_offset_in_finalize=self._commit,
        max_num_records=self._max_num_records,
        max_read_time=self._max_read_time_s,
        expansion_service=self._expansion_service or expansion_service(),
    )
    topics = self._topics
    return (
        pbegin
        | 'ReadFromKafka' >> read
        | 'ToSourceMessage' >> beam.Map(_to_source_message, topics).with_output_types(SourceMessage))


def _as_kv_bytes(element) -> Tuple[bytes, bytes]:
  key, value = element
  if key is not None and not isinstance(key, bytes):
    key = str(key).encode('utf-8')
  if not isinstance(value, bytes):
    value = str(value).encode('utf-8')
  return (key if key is not None else b''), value


class PublishToKafka(beam.PTransform):
  """Writes a PCollection of ``(key bytes, value bytes)`` to one Kafka topic.

  ``str`` keys / values are UTF-8 encoded; a ``None`` key is written as an empty key.
  ``producer_config`` passes through like ``ReadKafkaMessages.consumer_config`` (security, TLS,
  ``acks``, ``compression.type``, ...). Values are never logged here.
  """

  def __init__(
      self,
      bootstrap_servers: str,
      topic: str,
      producer_config: Optional[Mapping[str, str]] = None,
      *,
      expansion_service: Optional[JavaJarExpansionService] = None,  # pylint: disable=redefined-outer-name
      label: Optional[str] = None):
    super().__init__(label)
    if not topic:
      raise ValueError('topic is required')
    self._topic = topic
    self._config = _client_config(bootstrap_servers, producer_config)
    self._expansion_service = expansion_service

  def __repr__(self):
    return f'PublishToKafka(topic={self._topic!r})'

  def expand(self, pcoll):
    return (
        pcoll
        | 'ToKV' >> beam.Map(_as_kv_bytes).with_output_types(Tuple[bytes, bytes])
        | 'WriteToKafka' >> WriteToKafka(
            producer_config=self._config,
            topic=self._topic,
            expansion_service=self._expansion_service or expansion_service()))


__all__: Iterable[str] = (
    'EXPANSION_SERVICE_ARGS', 'FLINK_VERSION', 'JAVA_BEAM_VERSION', 'PublishToKafka',
    'ReadKafkaMessages', 'cancel_flink_job', 'expansion_service', 'flink_job_server',
    'flink_job_server_jar', 'flink_pipeline_options', 'io_expansion_service_jar', 'jars_dir',
    'redact_config')
