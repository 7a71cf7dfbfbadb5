"""pipelines/scratch.py: the private scratch root, process folders, and the sweep of those
whose process has ended."""

import fcntl
import os
import subprocess
import sys
import tempfile
import time

import pytest

from pipelines import scratch


@pytest.fixture
def tmpdir_root(tmp_path, monkeypatch):
  """Python's temporary folder pointed at ``tmp_path`` for the test."""
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  return tmp_path / f'attack-detection-{os.getuid()}'


def _ended_pid() -> int:
  process = subprocess.Popen(['true'])
  process.wait()
  return process.pid


def _cmdline(pid: int) -> bytes:
  with open(f'/proc/{pid}/cmdline', 'rb') as f:
    return f.read()


def test_private_root_is_made_private(tmpdir_root):
  assert scratch.private_root() == str(tmpdir_root)
  assert tmpdir_root.stat().st_mode & 0o777 == 0o700
  assert scratch.private_root() == str(tmpdir_root)  # an existing private one is taken


@pytest.mark.parametrize('plant', ['shared mode', 'another user', 'link', 'file'])
def test_private_root_refuses_what_others_could_plant(tmpdir_root, tmp_path, plant):
  if plant == 'shared mode':
    tmpdir_root.mkdir(mode=0o700)
    tmpdir_root.chmod(0o777)
  elif plant == 'another user':
    if os.getuid() != 0:
      pytest.skip('only root can give a folder to another user')
    tmpdir_root.mkdir(mode=0o700)
    os.chown(tmpdir_root, 65534, 65534)
  elif plant == 'link':
    (tmp_path / 'elsewhere').mkdir(mode=0o700)
    tmpdir_root.symlink_to(tmp_path / 'elsewhere')
  else:
    tmpdir_root.write_text('')
  with pytest.raises(scratch.UnsafeScratchFolder, match='TMPDIR'):
    scratch.private_root()
  with pytest.raises(scratch.UnsafeScratchFolder):
    scratch.process_folder('sdk-worker')


def test_folders_of_ended_processes_are_removed_by_the_next_one(tmpdir_root):
  mine = scratch.process_folder('sdk-worker')
  ended = scratch.process_folder('sdk-worker', pid=_ended_pid())
  assert os.path.basename(mine).startswith(f'sdk-worker-{os.getpid()}-')
  assert scratch.owner(os.path.basename(mine)) == os.getpid()
  assert os.path.isdir(ended) and os.path.isdir(mine)
  newer = scratch.process_folder('flink-job-server')
  assert not os.path.exists(ended)
  assert os.path.isdir(mine) and os.path.isdir(newer)
  assert oct(os.stat(newer).st_mode & 0o777) == oct(0o700)


def test_a_folder_named_on_a_running_command_line_is_kept(tmpdir_root):
  """A JVM given -Djava.io.tmpdir=<folder> outlives the Python process that made it."""
  folder = scratch.process_folder('flink-job-server', pid=_ended_pid())
  jvm_like = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)',
                               f'-Djava.io.tmpdir={folder}'])
  # Until the child has exec'd, its command line is still the forking test's.
  deadline = time.monotonic() + 30
  while folder.encode() not in _cmdline(jvm_like.pid) and time.monotonic() < deadline:
    time.sleep(0.01)
  try:
    assert scratch.sweep(str(tmpdir_root)) == []
    assert os.path.isdir(folder)
  finally:
    jvm_like.kill()
    jvm_like.wait()
  assert scratch.sweep(str(tmpdir_root)) == [folder]
  assert not os.path.exists(folder)


def test_other_entries_are_left_alone(tmpdir_root):
  root = scratch.private_root()
  other = os.path.join(root, 'notes')
  os.mkdir(other)
  assert scratch.owner('notes') is None and scratch.owner('staged-0123456789abcdef') is None
  scratch.sweep(root)
  assert os.path.isdir(other)


def test_staged_packages_unused_for_a_week_are_removed(tmpdir_root):
  recent, old, locked = (scratch.staged_folder(key) for key in ('a' * 16, 'b' * 16, 'c' * 16))
  week_ago = time.time() - scratch.STAGED_UNUSED_S - 60
  for folder in (recent, old, locked):
    open(os.path.join(folder, '.lock'), 'w').close()
  for folder in (old, locked):
    os.utime(os.path.join(folder, '.lock'), (week_ago, week_ago))
  with open(os.path.join(locked, '.lock'), encoding='utf-8') as held:
    # Another process installing into it: flock is per open file, so one of our own will do.
    fcntl.flock(held, fcntl.LOCK_EX)
    assert scratch.sweep(scratch.private_root()) == [old]
  assert os.path.isdir(recent) and os.path.isdir(locked) and not os.path.exists(old)
