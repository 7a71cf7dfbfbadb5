"""Python SDK workers forked from a pre-imported interpreter (a "zygote"), for the job's own
embedded Flink.

A fresh SDK worker spends seconds starting Python and importing Beam, pyarrow, scikit-learn
and the project before it can connect, and the job starts four of them at once on the cores
the JVM needs too. The stream job instead starts one fork server beside its job server
(:func:`running`, from pipelines/runners.py ``forked_sdk_workers``)::

    python -m pipelines.fork_server serve --socket <scratch>/fork-server-4711-xyz/socket

It imports what the workers need once (:data:`PRELOAD`), while the JVM starts, then forks a
worker per request. The process Flink starts, scripts/sdk_worker.sh, becomes a thin
launcher (``python -m pipelines.fork_server ARGS``, when ``ATTACK_DETECTION_FORK_SERVER``
names the socket): it hands its arguments, environment, working directory and standard
streams to the server over the Unix socket, then lives exactly as long as the forked worker,
relaying SIGTERM/SIGINT/SIGHUP/SIGQUIT to it and exiting with its status (killed by a signal:
killed by the same signal), so Flink's process management keeps working. A launcher killed
outright takes its worker with it (the server kills a worker whose launcher's connection
closes), and a stopped server takes its workers with it (``PR_SET_PDEATHSIG``).

The forked worker is ``pipelines.sdk_worker.main``, as in a fresh process: provision,
staged packages (a job that staged any re-execs a fresh interpreter over them, as before),
secret redaction, its startup line.

Where there is no server (no variable, a TaskManager host, the EXTERNAL pool, a remote
cluster, a server that stopped or refuses), the launcher execs today's fresh
``python -m pipelines.sdk_worker``. The server refuses a request when forking would not be
safe or would not give the worker a fresh one would have: more than one thread in the server
(a thread pool, gRPC, a logging thread: forking copies only the calling thread and whatever
locks the others held), or another interpreter or ``sys.path`` than the launcher's.

The socket is in a folder of its own in the user's private scratch folder (pipelines/scratch.py:
mode 0700) and is itself 0600: only the same user can connect. It never listens on TCP.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import pkgutil
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

from pipelines import scratch

_LOG = logging.getLogger('pipelines.fork_server')

# The launcher finds the server's socket here (set by :func:`running` for the job's JVMs).
FORK_SERVER_ENV = 'ATTACK_DETECTION_FORK_SERVER'

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What an SDK worker imports before and while it unpickles the job's DoFns. ONNX Runtime is
# left out: importing it starts a thread (the project imports it where a session is made).
PRELOAD = ('apache_beam.runners.worker.sdk_worker_main',
           'apache_beam.runners.worker.bundle_processor',
           'apache_beam.runners.worker.operations',
           'apache_beam.io.filesystems', 'pyarrow.parquet', 'pandas', 'sklearn.compose',
           'sklearn.ensemble', 'sklearn.impute', 'sklearn.pipeline', 'sklearn.preprocessing',
           'msgspec', 'skl2onnx', 'skops.io', 'pipelines.sdk_worker')
# The project's packages whose every module is preloaded too.
PRELOAD_PACKAGES = ('schemas', 'model', 'transforms')

# Libraries that start threads when they are loaded unless told not to: OpenBLAS (numpy,
# scipy) its pool, Arrow's jemalloc its background purging thread. The server is started
# with these (unless set already); the workers forked from it inherit them: one BLAS
# thread per worker, as ONNX Runtime's sessions use one (model/serving.py).
SINGLE_THREADED_ENV = {'OPENBLAS_NUM_THREADS': '1', 'JE_ARROW_MALLOC_CONF': 'background_thread:false'}

_RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_PDEATHSIG = 1
_REPLY_TIMEOUT_S = 300
_HEADER = struct.Struct('!I')
_MAX_MESSAGE = 16 << 20


# --------------------------------------------------------------------------------------------
# The wire: length-prefixed JSON messages, the launcher's standard streams beside the request
# --------------------------------------------------------------------------------------------


def _send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
  body = json.dumps(message).encode()
  data = _HEADER.pack(len(body)) + body
  if fds:
    data = data[socket.send_fds(sock, [data], list(fds)):]
  if data:  # an empty send to a peer that has answered and closed already fails (EPIPE)
    sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int, fds: list[int]) -> Optional[bytes]:
  data = b''
  while len(data) < size:
    chunk, received, _flags, _addr = socket.recv_fds(sock, size - len(data), 3)
    fds.extend(received)
    if not chunk:
      return None
    data += chunk
  return data


def _recv(sock: socket.socket) -> tuple[Optional[dict], list[int]]:
  """One message and the descriptors that came with it; (None, []) at end of stream."""
  fds: list[int] = []
  header = _recv_exact(sock, _HEADER.size, fds)
  if header is None:
    return None, fds
  size, = _HEADER.unpack(header)
  if size > _MAX_MESSAGE:
    raise ValueError(f'message of {size} bytes')
  body = _recv_exact(sock, size, fds)
  return (None if body is None else json.loads(body)), fds


def _die_with_parent(signum: int) -> None:
  """``signum`` to this process when its parent ends (Linux; elsewhere nothing)."""
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
  except (OSError, AttributeError):
    pass


def _show_command_line(argv: Sequence[str]) -> None:
  """Shows ``argv`` as this process's command line (``/proc/self/cmdline``, ``ps``), cut to the
  space the original one had: a forked worker would show the server's otherwise, and tools
  find SDK workers by their command line (``ps``, the fault tests, the benchmarks' samplers).
  The original arguments' memory is the kernel's record of them; Python keeps copies."""
  try:
    with open('/proc/self/stat', 'rb') as f:
      fields = f.read().rsplit(b')', 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (stat fields 48, 49)
  except (OSError, IndexError, ValueError):
    return
  if start <= 0 or end - start < 2:
    return
  data = '\0'.join(argv).encode()[:end - start - 1]
  ctypes.memmove(start, data + b'\0' * (end - start - len(data)), end - start)


def _interpreter() -> dict:
  """What a forked worker shares with the server and must match what the launcher's fresh
  interpreter would be."""
  # An entry listed twice resolves as its first: the same search order.
  return {'executable': os.path.realpath(sys.executable), 'prefix': sys.prefix,
          'path': list(dict.fromkeys(p for p in sys.path if p))}


def thread_count() -> int:
  """Threads of this process, Python's and native ones (``/proc``; Python's where none)."""
  try:
    return len(os.listdir('/proc/self/task'))
  except OSError:
    return threading.active_count()


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def preload(modules: Sequence[str] = PRELOAD, packages: Sequence[str] = PRELOAD_PACKAGES) -> None:
  """Imports ``modules`` and every module of ``packages``. A module that fails is left to the
  worker, which imports it (and reports the failure) itself."""
  names = list(modules)
  for package in packages:
    try:
      path = importlib.import_module(package).__path__
    except ImportError as e:
      _LOG.warning('fork server: not preloading %s: %s', package, e)
      continue
    names += [m.name for m in pkgutil.walk_packages(path, package + '.')]
  for name in names:
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.warning('fork server: not preloading %s: %s', name, e)


class ForkServer:
  """Accepts launchers on a Unix socket and forks ``target(argv, launcher_pid)`` for each, in a
  child that gets the launcher's standard streams, environment and working directory.
  One thread: requests, the children's ends and the launchers' ends in one select loop."""

  def __init__(self, path: str, target: Callable[[list[str], int], None]):
    self.path, self.target = path, target
    self.children: dict[int, socket.socket] = {}
    self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
      self.listener.bind(path)
    finally:
      os.umask(umask)
    self.listener.listen(64)
    self._wakeup_r, self._wakeup_w = socket.socketpair()
    self._wakeup_r.setblocking(False)
    self._wakeup_w.setblocking(False)
    self.selector = selectors.DefaultSelector()
    self.stopping = False

  def refusal(self, request: dict) -> Optional[str]:
    """Why the child of ``request`` must not be forked from here, or None."""
    threads = thread_count()
    if threads > 1 or threading.active_count() > 1:
      names = [t.name for t in threading.enumerate()]
      return f'the fork server has {threads} threads (Python: {names})'
    ours = _interpreter()
    theirs = request.get('interpreter')
    if theirs != ours:
      return f'the launcher runs another interpreter or sys.path ({theirs} != {ours})'
    return None

  def serve(self) -> None:
    signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
      signal.signal(signum, self._on_signal)
    self.selector.register(self.listener, selectors.EVENT_READ, 'accept')
    self.selector.register(self._wakeup_r, selectors.EVENT_READ, 'signal')
    try:
      while not self.stopping:
        for key, _ in self.selector.select():
          if key.data == 'accept':
            self._accept()
          elif key.data == 'signal':
            self._drain_wakeup()
          else:
            self._launcher_gone(key.data)
        self._reap()
    finally:
      self.stop_children()
      self.close()

  def _on_signal(self, signum, _frame) -> None:
    if signum != signal.SIGCHLD:
      self.stopping = True

  def _drain_wakeup(self) -> None:
    with contextlib.suppress(BlockingIOError):
      while self._wakeup_r.recv(256):
        pass

  def _accept(self) -> None:
    conn, _ = self.listener.accept()
    fds: list[int] = []
    try:
      conn.settimeout(10)
      request, fds = _recv(conn)
      if request is None or len(fds) != 3:
        return
      why = self.refusal(request)
      if why:
        _LOG.warning('fork server: refused a worker: %s', why)
        _send(conn, {'refused': why})
        return
      pid = self._fork(conn, request, fds)
      _send(conn, {'pid': pid})
      conn.settimeout(None)
      self.children[pid] = conn
      self.selector.register(conn, selectors.EVENT_READ, pid)
      conn = None
    except (OSError, ValueError) as e:
      _LOG.warning('fork server: a request failed: %s', e)
    finally:
      for fd in fds:
        os.close(fd)
      if conn is not None:
        conn.close()

  def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> int:
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    pid = os.fork()
    if pid:
      return pid
    code, die_of = 1, None
    try:
      self._become_worker(conn, request, fds)
      self.target(list(request['argv']), int(request['launcher']))
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
      die_of = signal.SIGINT  # as Python itself ends on an uncaught Ctrl-C
    except BaseException:  # pylint: disable=broad-except
      logging.getLogger('pipelines.sdk_worker').exception('SDK worker failed')
    finally:
      # The end of an interpreter, not of the server's loop this child was forked inside.
      with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()  # pylint: disable=protected-access
      with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
      if die_of is not None:
        signal.signal(die_of, signal.SIG_DFL)
        os.kill(os.getpid(), die_of)
      os._exit(code)  # pylint: disable=protected-access

  def _become_worker(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the child: the server's sockets and signal handling gone, the launcher's streams,
    environment and directory in their place, fresh random state."""
    _die_with_parent(signal.SIGKILL)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    self.selector.close()
    for sock in (self.listener, self._wakeup_r, self._wakeup_w, conn, *self.children.values()):
      sock.close()
    self.children = {}
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
      os.close(fd)
    fds.clear()
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    sys.argv = [os.path.join(ROOT, 'pipelines', 'sdk_worker.py'), *request['argv']]
    _show_command_line([sys.executable, '-m', 'pipelines.sdk_worker', *request['argv']])
    random.seed()  # also done by Python at fork; numpy's global generator is not
    numpy = sys.modules.get('numpy')
    if numpy is not None:
      numpy.random.seed()
    root = logging.getLogger()
    for handler in list(root.handlers):
      root.removeHandler(handler)
    root.setLevel(logging.WARNING)

  def _launcher_gone(self, pid: int) -> None:
    """The launcher's connection closed before its worker ended: Flink killed it outright, so
    the worker goes too (it is reaped, and reported to nobody, by :meth:`_reap`)."""
    conn = self.children.get(pid)
    if conn is None:
      return
    self.selector.unregister(conn)
    with contextlib.suppress(OSError):
      data = conn.recv(1, socket.MSG_PEEK)
      if data:
        return  # the launcher sends nothing after its request; ignore stray bytes
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, signal.SIGKILL)

  def _reap(self) -> None:
    while self.children:
      try:
        pid, status = os.waitpid(-1, os.WNOHANG)
      except ChildProcessError:
        return
      if not pid:
        return
      conn = self.children.pop(pid, None)
      if conn is None:
        continue
      with contextlib.suppress(KeyError, ValueError):
        self.selector.unregister(conn)
      with contextlib.suppress(OSError):
        _send(conn, {'status': status})
      conn.close()

  def stop_children(self, timeout_s: float = 5.0) -> None:
    for pid in list(self.children):
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while self.children and time.monotonic() < deadline:
      self._reap()
      time.sleep(0.05)
    for pid in list(self.children):
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    self._reap()

  def close(self) -> None:
    with contextlib.suppress(OSError):
      self.selector.close()
    for sock in (self.listener, self._wakeup_r, self._wakeup_w):
      sock.close()
    with contextlib.suppress(OSError):
      os.unlink(self.path)


def _run_sdk_worker(argv: list[str], launcher: int) -> None:
  """The worker, its startup line's first phase from its launcher's start. Imported here, not
  at the top: the launcher runs this module too and must stay light (the server has them
  preloaded)."""
  startup = importlib.import_module('pipelines.startup')
  importlib.import_module('pipelines.sdk_worker').main(
      argv, started=startup.process_start_time(launcher), first_phase='launcher and fork')


def serve(path: str, parent: Optional[int] = None) -> None:
  """The server's own process: listen first (a launcher that comes early waits for the
  preloading instead of starting a fresh interpreter beside it), then preload, then fork."""
  _die_with_parent(signal.SIGTERM)
  if parent is not None and os.getppid() != parent:
    return  # the job ended before the server was up
  server = ForkServer(path, _run_sdk_worker)
  started = time.monotonic()
  preload()
  gc.collect()
  gc.freeze()  # the preloaded objects stay out of the children's collections: fewer copied pages
  _LOG.info('fork server: preloaded in %.1f s, %d thread(s), on %s',
            time.monotonic() - started, thread_count(), path)
  server.serve()


# --------------------------------------------------------------------------------------------
# The launcher (scripts/sdk_worker.sh)
# --------------------------------------------------------------------------------------------


def _fresh_worker(argv: Sequence[str]) -> None:
  os.execv(sys.executable, [sys.executable, '-m', 'pipelines.sdk_worker', *argv])


def launch(argv: Sequence[str], path: Optional[str] = None,
           fallback: Callable[[Sequence[str]], None] = _fresh_worker) -> int:
  """Has the server at ``path`` fork the worker for ``argv`` and waits for it; returns its
  exit code (or dies of the signal that killed it). ``fallback(argv)`` (exec a fresh worker)
  when there is no server or it refuses."""
  path = path if path is not None else os.environ.get(FORK_SERVER_ENV)
  conn = None
  if path:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
      conn.connect(path)
      # A server still preloading answers when it is done; one that hangs is given up on.
      conn.settimeout(_REPLY_TIMEOUT_S)
      env = {k: v for k, v in os.environ.items() if k != FORK_SERVER_ENV}
      _send(conn, {'argv': list(argv), 'env': env, 'cwd': os.getcwd(), 'launcher': os.getpid(),
                   'interpreter': _interpreter()}, fds=(0, 1, 2))
      reply, _ = _recv(conn)
    except (OSError, ValueError) as e:  # no server, a stopped one, a garbled answer
      print(f'fork server {path}: {e}; starting a fresh SDK worker', file=sys.stderr)
      reply = None
    if reply is None or 'pid' not in reply:
      if reply:
        print(f'fork server refused: {reply.get("refused")}; starting a fresh SDK worker',
              file=sys.stderr)
      conn.close()
      conn = None
  if conn is None:
    fallback(argv)
    return 1  # only when the fallback returns (tests)
  conn.settimeout(None)
  return _wait(conn, int(reply['pid']))


def _wait(conn: socket.socket, pid: int) -> int:
  def relay(signum, _frame):
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, signum)

  for signum in _RELAYED:
    signal.signal(signum, relay)
  with conn:
    reply, _ = _recv(conn)
  if reply is None:
    print('fork server: gone before its SDK worker ended', file=sys.stderr)
    return 1
  status = int(reply['status'])
  if os.WIFSIGNALED(status):
    signum = os.WTERMSIG(status)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum
  return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------------------------
# The job's side
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(python: Optional[str] = None) -> Iterator[str]:
  """A fork server for the span of a ``with`` block, its socket in ``FORK_SERVER_ENV`` for
  the processes started meanwhile (the job server JVM, and through it Flink's launchers).
  Returns at once: the server preloads while the caller goes on. Yields the socket's path."""
  folder = scratch.process_folder('fork-server')
  path = os.path.join(folder, 'socket')
  env = dict(os.environ)
  for key, value in SINGLE_THREADED_ENV.items():
    env.setdefault(key, value)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (ROOT, env.get('PYTHONPATH')) if p)
  env.pop(FORK_SERVER_ENV, None)
  # A session of its own: a Ctrl-C at the terminal is the job's to handle (it stops the job,
  # perhaps with a savepoint, which needs the workers), not the server's or the workers'.
  process = subprocess.Popen(
      [python or sys.executable, '-m', 'pipelines.fork_server', 'serve', '--socket', path,
       '--parent', str(os.getpid())], env=env, stdin=subprocess.DEVNULL, start_new_session=True)
  previous = os.environ.get(FORK_SERVER_ENV)
  os.environ[FORK_SERVER_ENV] = path
  try:
    yield path
  finally:
    if previous is None:
      os.environ.pop(FORK_SERVER_ENV, None)
    else:
      os.environ[FORK_SERVER_ENV] = previous
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ['serve']:
    parser = argparse.ArgumentParser(prog='python -m pipelines.fork_server serve')
    parser.add_argument('--socket', required=True)
    parser.add_argument('--parent', type=int, default=None)
    args = parser.parse_args(argv[1:])
    logging.basicConfig(level=logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s %(message)s')
    serve(args.socket, args.parent)
    return
  sys.exit(launch(argv))


if __name__ == '__main__':
  main()
