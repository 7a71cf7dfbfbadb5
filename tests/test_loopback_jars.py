"""The Java pieces that keep the JVM servers on loopback (jvm/loopback/, built by
transforms/jvm.py) compile against the pinned jars and come out runnable; the sockets
themselves are checked by tests/integration/test_network_exposure.py."""

import os
import shutil
import zipfile

import pytest

from pipelines import runners
from transforms import jvm


def _pinned(find):
  if shutil.which('javac') is None:
    pytest.skip('javac is not installed')
  try:
    return find()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_the_server_factory_replacement_compiles_against_the_job_server_jar(tmp_path):
  jar = tmp_path / os.path.basename(_pinned(jvm.flink_job_server_jar))
  jar.symlink_to(jvm.flink_job_server_jar())
  built = jvm.loopback_jar('factory', str(jar), [jvm.SERVER_FACTORY_SOURCE])  # pylint: disable=protected-access
  assert os.path.dirname(built) == str(tmp_path)
  with zipfile.ZipFile(built) as z:
    names = set(z.namelist())
  # The whole class with every nested class, so that none of the original's is mixed in.
  for cls in ('ServerFactory', 'ServerFactory$InetSocketAddressServerFactory',
              'ServerFactory$UrlFactory', 'ServerFactory$EpollSocket',
              'ServerFactory$EpollDomainSocket'):
    assert f'org/apache/beam/sdk/fn/server/{cls}.class' in names
  # Built once: the same sources give the same jar, without compiling again.
  mtime = os.path.getmtime(built)
  assert jvm.loopback_jar('factory', str(jar), [jvm.SERVER_FACTORY_SOURCE]) == built  # pylint: disable=protected-access
  assert os.path.getmtime(built) == mtime


def test_the_expansion_launcher_runs_with_the_expansion_jar_on_its_class_path(tmp_path):
  jar = tmp_path / os.path.basename(_pinned(jvm.io_expansion_service_jar))
  jar.symlink_to(jvm.io_expansion_service_jar())
  built = jvm.loopback_jar('launcher', str(jar), [jvm.EXPANSION_MAIN_SOURCE],  # pylint: disable=protected-access
                                 main_class='LoopbackExpansionService')
  with zipfile.ZipFile(built) as z:
    manifest = z.read('META-INF/MANIFEST.MF').decode()
    assert 'LoopbackExpansionService.class' in z.namelist()
  assert 'Main-Class: LoopbackExpansionService' in manifest
  assert f'Class-Path: {jar.name}' in manifest


def test_the_job_server_app_jar_holds_our_classes_as_the_sources_compile_today(tmp_path):
  """The jar shipped alone (--flink_submit_uber_jar, --output_executable_path) carries the
  classes of jvm/loopback/ byte for byte as they compile now: one built before a change there
  fails here (scripts/fetch_jars.sh rebuilds it). Its ServerFactory is ours, not Beam's."""
  app = _pinned(jvm.flink_job_server_app_jar)
  jar = tmp_path / os.path.basename(app)
  jar.symlink_to(app)
  current = jvm.loopback_jar('current', str(jar), jvm.JOB_SERVER_SOURCES)
  with zipfile.ZipFile(current) as now, zipfile.ZipFile(app) as shipped:
    classes = [n for n in now.namelist() if n.endswith('.class')]
    assert 'attackdetection/kafka/KafkaBatchSource$Reader.class' in classes
    assert ('org/apache/beam/sdk/fn/server/ServerFactory$InetSocketAddressServerFactory.class'
            in classes)
    stale = [n for n in classes if n not in shipped.namelist() or shipped.read(n) != now.read(n)]
    assert not stale, f'{app} is older than jvm/loopback/ (run scripts/fetch_jars.sh): {stale}'
    # The job server itself, and the runner whose jar --output_executable_path copies.
    assert 'Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver' in (
        shipped.read('META-INF/MANIFEST.MF').decode())
    assert 'org/apache/beam/runners/flink/FlinkPipelineRunner.class' in shipped.namelist()


@pytest.mark.parametrize('flag', ['--flink_submit_uber_jar', '--output_executable_path=job.jar'])
def test_a_job_shipped_as_one_jar_gets_the_app_jar_by_default(tmp_path, monkeypatch, flag):
  for name in (jvm.JOB_SERVER_JAR, jvm.JOB_SERVER_APP_JAR):
    (tmp_path / name).write_bytes(b'')
  monkeypatch.setenv('BEAM_JARS_DIR', str(tmp_path))
  base = ['--runner=FlinkRunner', '--flink_master=localhost:8081']

  def jar(argv):
    argv = runners.with_flink_defaults(argv)
    return [a.split('=', 1)[1] for a in argv if a.startswith('--flink_job_server_jar=')]

  assert jar([*base, flag]) == [str(tmp_path / jvm.JOB_SERVER_APP_JAR)]
  assert jar(base) == [str(tmp_path / jvm.JOB_SERVER_JAR)]
  # A jar the command line names wins.
  assert jar([*base, flag, '--flink_job_server_jar=/x.jar']) == ['/x.jar']
