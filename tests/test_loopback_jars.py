"""The Java pieces that keep the JVM servers on loopback (jvm/loopback/, built by
transforms/jvm.py) compile against the pinned jars and come out runnable; the sockets
themselves are checked by tests/integration/test_network_exposure.py."""

import os
import shutil
import zipfile

import pytest

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
