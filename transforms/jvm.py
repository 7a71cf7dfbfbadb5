"""The pinned JVM side: where its jars are, and the small Java classes that keep its servers on
loopback.

The jars are pinned and built by ``scripts/fetch_jars.sh`` into ``.cache/jars/`` (see
``jvm/pom.xml`` and ``docs/RUNTIME.md`` for why they are Beam Java 2.62.0 on Flink 1.19 while
the Python SDK is 2.77.0)::

    .cache/jars/beam-runners-flink-1.19-job-server-2.62.0.jar   (job server; also carries KafkaIO)
    .cache/jars/beam-runners-flink-1.19-job-server-app-2.62.0.jar  (the same + our Java classes)
    .cache/jars/beam-sdks-java-io-expansion-service-2.62.0.jar  (expansion service for KafkaIO)

This module sits below both of its users: the Kafka transforms (transforms/kafka_io.py) expand
through the expansion service jar, and the runner set-up (pipelines/runners.py) starts the job
server jar.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from typing import List, Mapping, Optional, Sequence

# The pinned JVM side (jvm/pom.xml). Keep in step with scripts/fetch_jars.sh.
JAVA_BEAM_VERSION = '2.62.0'
FLINK_VERSION = '1.19'
JOB_SERVER_JAR = f'beam-runners-flink-{FLINK_VERSION}-job-server-{JAVA_BEAM_VERSION}.jar'
EXPANSION_SERVICE_JAR = f'beam-sdks-java-io-expansion-service-{JAVA_BEAM_VERSION}.jar'
# JOB_SERVER_JAR with the classes of JOB_SERVER_SOURCES inside (jvm/beam-flink-job-server-app).
JOB_SERVER_APP_JAR = f'beam-runners-flink-{FLINK_VERSION}-job-server-app-{JAVA_BEAM_VERSION}.jar'

# What the local JVMs bind: the name Beam itself puts in every URL it hands out.
LOCAL_HOST = 'localhost'

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Java sources that keep the JVM servers on loopback (see loopback_jar, docs/RUNTIME.md).
_LOOPBACK_SOURCES = os.path.join(_REPO_ROOT, 'jvm', 'loopback')
SERVER_FACTORY_SOURCE = 'org/apache/beam/sdk/fn/server/ServerFactory.java'
EXPANSION_MAIN_SOURCE = 'LoopbackExpansionService.java'
EXPANSION_MAIN_CLASS = 'LoopbackExpansionService'
# The project's own Java transform (Kafka records handed to Python in batches, see
# transforms/kafka_io.py). The expansion service builds it, the job server's embedded harness
# runs its DoFn: both class paths carry it.
KAFKA_BATCHES_SOURCES = ('attackdetection/kafka/ReadKafkaBatches.java',
                         'attackdetection/kafka/KafkaBatchSource.java',
                         'org/apache/beam/sdk/io/kafka/KafkaSources.java')
KAFKA_BATCHES_SERVICES = {
    'org.apache.beam.sdk.expansion.ExternalTransformRegistrar':
        ['attackdetection.kafka.ReadKafkaBatches$Registrar'],
}
# What the job server runs with, before its own jar (pipelines/runners.py): with the expansion
# service's main, which can run the job server's in the same JVM.
JOB_SERVER_SOURCES = (SERVER_FACTORY_SOURCE, EXPANSION_MAIN_SOURCE, *KAFKA_BATCHES_SOURCES)


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


def flink_job_server_app_jar(jars_dir: Optional[str] = None) -> str:  # pylint: disable=redefined-outer-name
  """Path of the job server jar that also holds the project's Java classes (the Kafka read in
  batches, the loopback ServerFactory), compiled by Maven from jvm/loopback/. It is the one jar
  shipped to the cluster when nothing can be put beside it: ``--flink_submit_uber_jar`` adds
  the pipeline to a copy of ``--flink_job_server_jar``, and ``--output_executable_path`` copies
  the jar that holds the job server's main class."""
  return _jar(JOB_SERVER_APP_JAR, jars_dir)


def io_expansion_service_jar(jars_dir: Optional[str] = None) -> str:  # pylint: disable=redefined-outer-name
  """Path of the pinned Beam IO expansion service jar (KafkaIO)."""
  return _jar(EXPANSION_SERVICE_JAR, jars_dir)


def loopback_jar(name: str, against: str, sources: Sequence[str],
                 main_class: Optional[str] = None,
                 services: Optional[Mapping[str, List[str]]] = None) -> str:
  """``sources`` (paths under jvm/loopback/) compiled against the jar ``against``, once, into
  ``<name>-<hash>.jar`` beside it. With ``main_class`` the jar runs with ``java -jar`` (its
  manifest puts ``against`` on the class path); ``services`` ({interface: [classes]}) become
  ``META-INF/services`` files, as Java's ServiceLoader finds them. Raises FileNotFoundError
  without ``javac``."""
  paths = [os.path.join(_LOOPBACK_SOURCES, source) for source in sources]
  services = dict(services or {})
  digest = hashlib.sha256(os.path.basename(against).encode())
  for path in paths:
    with open(path, 'rb') as f:
      digest.update(f.read())
  digest.update(repr(sorted(services.items())).encode())
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
      for interface, implementations in sorted(services.items()):
        out.writestr(f'META-INF/services/{interface}', ''.join(f'{c}\n' for c in implementations))
      for root, _, files in os.walk(classes):
        for file in sorted(files):
          out.write(os.path.join(root, file),
                    os.path.relpath(os.path.join(root, file), classes))
    os.replace(tmp, jar)
  return jar
