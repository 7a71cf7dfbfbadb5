"""Processes as /proc shows them: command lines, process trees, CPU time and memory."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Optional


def cmdline(pid: int) -> str:
  """The command line of ``pid``, arguments joined by spaces ('' once it is gone)."""
  with contextlib.suppress(OSError):
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
  return ''


def alive(pid: int) -> bool:
  """Whether ``pid`` runs: it exists and is no zombie. A process may end between any two reads
  of /proc, so every way it can be found gone counts as gone."""
  try:
    os.kill(pid, 0)
    with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return False


def find_pid(predicate: Callable[[str], bool]) -> Optional[int]:
  """The first process whose command line ``predicate`` accepts, else None."""
  for name in os.listdir('/proc'):
    if name.isdigit() and predicate(cmdline(int(name))):
      return int(name)
  return None


def children(pid: int) -> list[int]:
  """The direct children of ``pid``."""
  out = []
  with contextlib.suppress(OSError):
    for tid in os.listdir(f'/proc/{pid}/task'):
      with contextlib.suppress(OSError):
        with open(f'/proc/{pid}/task/{tid}/children', encoding='utf-8') as f:
          out.extend(int(c) for c in f.read().split())
  return out


def descendants(root: int) -> list[int]:
  """Every process started, directly or not, by ``root`` (Flink starts the Python SDK
  workers under the job server, or under a cluster's TaskManager), from the parent ids."""
  by_parent: dict[int, set[int]] = {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat', encoding='ascii', errors='replace') as f:
          # The command name is in parentheses and may hold spaces: the ppid follows its ')'.
          ppid = int(f.read().rsplit(')', 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue
      by_parent.setdefault(ppid, set()).add(int(entry))
  found, todo = [], [root]
  while todo:
    for child in sorted(by_parent.get(todo.pop(), ())):
      if child not in found:
        found.append(child)
        todo.append(child)
  return found


def cpu_ticks(pid: int) -> int:
  """User + system CPU time of a process so far, in clock ticks (0 once it is gone)."""
  with contextlib.suppress(OSError, IndexError, ValueError):
    with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
      fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])
  return 0


# A JVM's threads by what they do, from their names (/proc shows the first 15 characters): the
# JIT compilers' and the garbage collector's CPU is a cost of the JVM, not of the records.
_JVM_THREAD_KINDS = (('C1 CompilerThre', 'jit'), ('C2 CompilerThre', 'jit'),
                     ('GC Thread', 'gc'), ('G1 ', 'gc'), ('VM Thread', 'gc'))


def jvm_thread_ticks(pid: int) -> dict[str, int]:
  """CPU clock ticks of a JVM's threads so far, summed by kind: ``jit`` (the C1 and C2
  compilers), ``gc`` (the collector's threads and the VM thread, which runs its pauses) and
  ``work`` (every other thread). Threads that have ended are not counted."""
  out = {'jit': 0, 'gc': 0, 'work': 0}
  with contextlib.suppress(OSError):
    for tid in os.listdir(f'/proc/{pid}/task'):
      with contextlib.suppress(OSError, IndexError, ValueError):
        with open(f'/proc/{pid}/task/{tid}/stat', encoding='ascii', errors='replace') as f:
          head, tail = f.read().rsplit(')', 1)
        name = head.split('(', 1)[1]
        fields = tail.split()
        kind = next((k for prefix, k in _JVM_THREAD_KINDS if name.startswith(prefix)), 'work')
        out[kind] += int(fields[11]) + int(fields[12])
  return out


def status_kb(pid: int) -> dict[str, int]:
  """``VmRSS`` and ``VmHWM`` of ``pid`` in kB (empty once it is gone)."""
  out = {}
  with contextlib.suppress(OSError):
    with open(f'/proc/{pid}/status', encoding='utf-8') as f:
      for line in f:
        if line.startswith(('VmRSS:', 'VmHWM:')):
          out[line.split(':')[0]] = int(line.split()[1])
  return out


def rss_mb(pid: int) -> float:
  return status_kb(pid).get('VmRSS', 0) / 1024
