"""The SDK workers' fork server (pipelines/fork_server.py): a real server forking real
children (a small function, tests/fork_server_target.py) for real launchers."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from harness.procs import alive
from pipelines import fork_server, runners

ROOT = fork_server.ROOT


def _env(**extra):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop(fork_server.FORK_SERVER_ENV, None)
  return dict(env, **extra)


@pytest.fixture
def server(tmp_path, request):
  """A fork server of tests/fork_server_target.py on a socket in ``tmp_path``; yields its
  path. ``@pytest.mark.parametrize('server', ['--with-thread'], indirect=True)`` starts a
  thread in it first."""
  path = str(tmp_path / 'socket')
  extra = [request.param] if getattr(request, 'param', None) else []
  process = subprocess.Popen([sys.executable, '-m', 'tests.fork_server_target', path, *extra],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'ready'
  yield path
  process.terminate()
  assert process.wait(timeout=10) == 0
  assert not os.path.exists(path)  # removed when it stops


def _launcher(path, *argv, **extra):
  """scripts/sdk_worker.sh's launcher, as Flink starts it."""
  return subprocess.Popen([sys.executable, '-m', 'pipelines.fork_server', *argv], cwd=ROOT,
                          env=_env(**{fork_server.FORK_SERVER_ENV: path}, **extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _gone(pid, timeout_s=10):
  deadline = time.monotonic() + timeout_s
  while alive(pid) and time.monotonic() < deadline:
    time.sleep(0.05)
  return not alive(pid)


def test_the_child_gets_the_launchers_streams_environment_and_exit_status(server, tmp_path):
  launchers = [_launcher(server, 'exit', str(code), FORK_TEST_VALUE=f'v{code}') for code in (0, 3)]
  outputs = []
  for code, launcher in zip((0, 3), launchers):
    out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == code, err
    child = json.loads(out)
    outputs.append(child)
    assert child['argv'] == ['exit', str(code)] and child['env'] == f'v{code}'
    assert child['cwd'] == ROOT and child['launcher'] == launcher.pid
    assert child['pid'] != launcher.pid and child['threads'] == 1
    # Shown as the worker it is (ps, the fault tests find workers so), not as the server.
    assert child['cmdline'].split('\0')[1:4] == ['-m', 'pipelines.sdk_worker', 'exit'], child
    # The server's sockets and its other launchers' connections are not the child's: its
    # streams only, and the folder it listed them from.
    assert len(child['fds']) == 4 and {'0', '1', '2'} <= set(child['fds']), child['fds']
  assert outputs[0]['random'] != outputs[1]['random']  # reseeded in each child


def test_a_child_that_execs_a_fresh_interpreter_is_still_waited_for(server):
  launcher = _launcher(server, 'exec', '5')
  out, err = launcher.communicate(timeout=30)
  assert launcher.returncode == 5, err
  assert json.loads(out)['argv'] == ['exec', '5']


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_the_launcher_relays_a_signal_and_dies_of_it(server, signum):
  launcher = _launcher(server, 'sleep')
  child = json.loads(launcher.stdout.readline())
  assert alive(child['pid'])
  launcher.send_signal(signum)
  assert launcher.wait(timeout=30) == -signum  # as the worker itself would
  assert _gone(child['pid'])


def test_a_launcher_killed_outright_takes_its_worker_with_it(server):
  launcher = _launcher(server, 'sleep')
  child = json.loads(launcher.stdout.readline())
  launcher.kill()
  launcher.wait(timeout=30)
  assert _gone(child['pid'])


def test_without_a_server_the_launcher_starts_a_fresh_worker(tmp_path, capfd):
  started = []
  for path in (None, str(tmp_path / 'no-such-socket')):
    env = os.environ.pop(fork_server.FORK_SERVER_ENV, None)
    try:
      fork_server.launch(['--id=1'], path, fallback=started.append)
    finally:
      if env is not None:
        os.environ[fork_server.FORK_SERVER_ENV] = env
  assert started == [['--id=1'], ['--id=1']]
  assert 'starting a fresh SDK worker' in capfd.readouterr().err  # the missing socket said so


@pytest.mark.parametrize('server', ['--with-thread'], indirect=True)
def test_a_server_with_threads_refuses_and_the_launcher_falls_back(server, capfd):
  started = []
  fork_server.launch(['--id=1'], server, fallback=started.append)
  assert started == [['--id=1']]
  err = capfd.readouterr().err
  assert 'refused' in err and '2 threads' in err and 'stray' in err


def test_the_job_side_server_preloads_without_threads_and_stops(tmp_path):
  """The real server (what the job starts): its socket private, its preloading leaves it
  forkable (a request is refused for the interpreter it names, not for threads), and it is
  gone when the block ends."""
  with fork_server.running() as path:
    assert os.environ[fork_server.FORK_SERVER_ENV] == path
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
      conn.connect(path)  # answered once the preloading is done
      r, w = os.pipe()
      fork_server._send(conn, {'argv': [], 'env': {}, 'cwd': '/', 'launcher': os.getpid(),  # pylint: disable=protected-access
                               'interpreter': {'executable': 'elsewhere'}}, fds=(r, w, w))
      conn.settimeout(120)
      reply, _ = fork_server._recv(conn)  # pylint: disable=protected-access
      os.close(r)
      os.close(w)
    assert 'another interpreter' in reply['refused'], reply
    server_pids = _pids_with(path)
    assert server_pids
  assert fork_server.FORK_SERVER_ENV not in os.environ
  assert not os.path.exists(os.path.dirname(path))
  assert all(_gone(pid) for pid in server_pids)


def _pids_with(text):
  pids = []
  for pid in os.listdir('/proc'):
    if pid.isdigit():
      try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
          if text.encode() in f.read():
            pids.append(int(pid))
      except OSError:
        pass
  return pids


@pytest.mark.parametrize('extra, forks', [
    ([], True),
    (['--flink_master=flink.example:8081'], False),  # a cluster's TaskManagers start them
    (['--job_endpoint=localhost:8099'], False),  # a job server started elsewhere
    (['--environment_type=LOOPBACK'], False),
    (['--environment_type=EXTERNAL'], False),  # the pool beside each TaskManager
    (['--environment_config={"command": "/opt/other_boot.sh"}'], False),
])
def test_the_job_forks_only_its_own_embedded_flinks_process_workers(extra, forks):
  argv = runners.with_flink_defaults(['--runner=FlinkRunner', '--flink_job_server_jar=x.jar',
                                      *extra])
  with runners.forked_sdk_workers(argv):
    assert (fork_server.FORK_SERVER_ENV in os.environ) == forks
  assert fork_server.FORK_SERVER_ENV not in os.environ
