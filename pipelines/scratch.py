"""Scratch folders of the processes a job starts: one private folder per user, one folder per
process inside it, and the folders of processes that have ended removed.

The job's processes write scratch files: the job server JVM (the embedded Flink MiniCluster's
blob store and I/O folders, a 21 MB RPC jar it unpacks at every start, native libraries; a
local Spark's block manager), the Python SDK workers (Beam's semi-persistent folder) and the
fork server's socket. In the system's temporary folder, those of every process killed before
its clean-up stayed for good (Flink stops SDK workers with SIGKILL; a job server JVM stopped
before its MiniCluster shuts down leaves its folders and the unpacked jar, about 23 MB). They
were readable by anyone on the host, and a worker that trusts a folder at a fixed shared path
(the staged packages it imports) could be handed one planted by another user. So::

    <tmp>/attack-detection-<uid>/       mode 0700, owned by the user (checked, or refused)
        <kind>-<pid>-<random>/           one process's scratch (see process_folder)
        staged-<key>/                    the staged-packages cache (pipelines/sdk_worker.py)

A process folder is removed by whoever makes the next one, once its ``<pid>`` has ended and no
running process names the folder on its command line (a JVM given ``-Djava.io.tmpdir=`` keeps
the folder of the Python process that started it while it runs). ``<tmp>`` is Python's
(``TMPDIR``, else /tmp).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from typing import Optional

_LOG = logging.getLogger(__name__)

_PROCESS_FOLDER = re.compile(r'[a-z][a-z-]*?-(?P<pid>\d+)-[^/]+')
STAGED_PREFIX = 'staged-'
# A staged-packages folder no worker has used for this long is removed (one per version of the
# job's code; each is a pip install of the project).
STAGED_UNUSED_S = 7 * 24 * 3600


class UnsafeScratchFolder(RuntimeError):
  """The scratch root exists but is not a folder private to this user."""


def private_root() -> str:
  """``<tmp>/attack-detection-<uid>``, made with mode 0700 if missing. Raises
  :class:`UnsafeScratchFolder`, saying what to do, when the path is a link, not a folder, or
  a folder that is another user's or that others may write or read."""
  path = os.path.join(tempfile.gettempdir(), f'attack-detection-{os.getuid()}')
  with contextlib.suppress(FileExistsError):
    os.mkdir(path, 0o700)
  st = os.lstat(path)
  problem = None
  if not stat.S_ISDIR(st.st_mode):
    problem = 'is not a folder (a link or a file)'
  elif st.st_uid != os.getuid():
    problem = f'belongs to uid {st.st_uid}, not to this user (uid {os.getuid()})'
  elif st.st_mode & 0o077:
    problem = f'has mode {stat.S_IMODE(st.st_mode):o}: others may use it'
  if problem:
    raise UnsafeScratchFolder(
        f'the scratch folder {path} {problem}. It holds what the job\'s workers run and '
        'write, so it must be private: remove it (it is made again, mode 0700), or set TMPDIR '
        'to a folder only you can write.')
  return path


def process_folder(kind: str, pid: Optional[int] = None, root: Optional[str] = None) -> str:
  """A new empty folder ``<root>/<kind>-<pid>-<random>`` (mode 0700) for process ``pid``
  (this one by default), after removing the folders of processes that have ended."""
  root = root or private_root()
  sweep(root)
  return tempfile.mkdtemp(prefix=f'{kind}-{pid or os.getpid()}-', dir=root)


def sweep(root: str) -> list[str]:
  """Removes the process folders in ``root`` whose process has ended and that no running
  process names on its command line, and staged-packages folders unused for
  :data:`STAGED_UNUSED_S`; returns the paths removed."""
  ended, staged = [], []
  for name in _listdir(root):
    pid = owner(name)
    if pid is not None and not _running(pid):
      ended.append(os.path.join(root, name))
    elif name.startswith(STAGED_PREFIX):
      staged.append(os.path.join(root, name))
  named = _command_lines() if ended else ''
  removed = [path for path in ended if path not in named]
  removed += [path for path in staged if _unused_staged(path)]
  for path in removed:
    shutil.rmtree(path, ignore_errors=True)
  if removed:
    _LOG.info('removed %d scratch folders of processes that have ended, in %s',
              len(removed), root)
  return removed


def owner(name: str) -> Optional[int]:
  """The pid a process folder's name ``<kind>-<pid>-<random>`` gives, else None."""
  match = _PROCESS_FOLDER.fullmatch(name)
  return int(match['pid']) if match else None


def staged_folder(key: str, root: Optional[str] = None) -> str:
  """The staged-packages folder for ``key`` (made if missing)."""
  path = os.path.join(root or private_root(), STAGED_PREFIX + key)
  os.makedirs(path, mode=0o700, exist_ok=True)
  return path


def _listdir(root: str) -> list[str]:
  try:
    return os.listdir(root)
  except FileNotFoundError:
    return []


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _command_lines() -> str:
  """Every running process's command line, NUL-separated ('' where /proc is not there)."""
  lines = []
  for entry in _listdir('/proc'):
    if entry.isdigit():
      with contextlib.suppress(OSError):
        with open(f'/proc/{entry}/cmdline', 'rb') as f:
          lines.append(f.read().decode('utf-8', 'replace'))
  return '\0'.join(lines)


def _unused_staged(path: str) -> bool:
  """Unused for :data:`STAGED_UNUSED_S` (its lock file's time: every worker that uses the
  folder touches it) and not locked by a worker installing into it now."""
  lock = os.path.join(path, '.lock')
  try:
    if time.time() - os.stat(lock).st_mtime < STAGED_UNUSED_S:
      return False
    with open(lock, 'a', encoding='utf-8') as f:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:  # gone, or locked
    return False
  return True
