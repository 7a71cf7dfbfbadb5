"""Where a stream job's startup goes: one always-on summary line, phase by phase.

    startup: first archived row 41.2 s after the process started: python start 8.0 s,
    job server 3.7 s, expansion service 4.9 s, expansion 6.8 s, submission 8.0 s,
    Flink deployment 1.2 s, SDK workers 18.1 s, first output 9.0 s

The submitting process marks each phase as it ends (:meth:`StartupTimeline.mark`); once the
job is submitted, :func:`watch` follows it on Flink's REST API (the job running, then every
task running: the SDK workers have started and connected) and in ``--output`` (the first
finished archive file written after the submission), and logs the line. Phases are the
time since the previous mark, so they add up to the total. A phase that was not seen (no
Flink REST API, another runner, a job stopped before its first output) is left out, and
the line says what it last saw.

What each phase holds (docs/RUNTIME.md, "Startup"):

* ``python start``: the interpreter's start and the job's imports, up to ``main``;
* ``job server``: the job server JVM until its job service answers (none with
  ``--job_endpoint``: a running one is reused); on Flink the Kafka transforms' expansion
  service starts inside it;
* ``expansion service``: an expansion-service JVM of the job's own until it answers (none
  with ``--expansion_service=host:port``, nor with a Flink job server of the job's own);
* ``expansion``: building the pipeline, with the Kafka transforms expanded by it;
* ``submission``: the pipeline's proto, staging, and the job server's ``Run``;
* ``Flink deployment``: translation to a Flink job, the embedded MiniCluster's start, the
  job scheduled (Flink says RUNNING);
* ``SDK workers``: tasks deployed and initialized, which includes starting every Python SDK
  worker (its interpreter, Beam's imports, connecting to the runner);
* ``first output``: the first bundles (DoFn set-up, with the model's load, verification and
  compilation), and the first archive roll closing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Iterator, Optional

from apache_beam.io.filesystems import FileSystems

from schemas.layout import ARCHIVE_FOLDERS, finished_files

_LOG = logging.getLogger('pipelines.startup')

# The marks the stream job makes, in order; their labels in the summary line.
PYTHON_START = 'python start'
JOB_SERVER = 'job server'
EXPANSION_SERVICE = 'expansion service'
EXPANSION = 'expansion'
SUBMISSION = 'submission'
FLINK_DEPLOYMENT = 'Flink deployment'
SDK_WORKERS = 'SDK workers'
FIRST_OUTPUT = 'first output'


def process_start_time(pid: Optional[int] = None) -> Optional[float]:
  """Wall-clock time a process started (``/proc``: its start in clock ticks after boot, and
  the boot time); None where there is no ``/proc``."""
  try:
    with open(f'/proc/{pid or "self"}/stat', encoding='ascii') as f:
      # The command name (field 2) may hold spaces and parentheses: split after its end.
      fields = f.read().rsplit(')', 1)[1].split()
    with open('/proc/stat', encoding='ascii') as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith('btime '))
  except (OSError, StopIteration, IndexError, ValueError):
    return None
  return boot + int(fields[19]) / os.sysconf('SC_CLK_TCK')


class StartupTimeline:
  """Named marks, in seconds of wall-clock time, from the process's start."""

  def __init__(self, started: Optional[float] = None):
    self.started = started if started is not None else (process_start_time() or time.time())
    self.marks: list[tuple[str, float]] = []
    self._lock = threading.Lock()
    self.logged = False

  def mark(self, phase: str, at: Optional[float] = None) -> None:
    """``phase`` ended now (or at ``at``, a ``time.time()``); a phase marked twice keeps its
    first end."""
    with self._lock:
      if all(name != phase for name, _ in self.marks):
        self.marks.append((phase, time.time() if at is None else at))

  def seen(self, phase: str) -> bool:
    return any(name == phase for name, _ in self.marks)

  def phases(self) -> list[tuple[str, float]]:
    """``(phase, seconds)``: each mark's time since the one before it (the first: since the
    process started)."""
    out, previous = [], self.started
    for name, at in self.marks:
      out.append((name, max(0.0, at - previous)))
      previous = at
    return out

  def summary(self) -> str:
    """The one line: total to the first output (or to the last phase seen), then each phase."""
    if not self.marks:
      return 'startup: no phase seen'
    parts = ', '.join(f'{name} {seconds:.1f} s' for name, seconds in self.phases())
    total = self.marks[-1][1] - self.started
    if self.seen(FIRST_OUTPUT):
      head = f'first archived row {total:.1f} s after the process started'
    else:
      head = f'no archived row yet; {self.marks[-1][0]} done {total:.1f} s after the process started'
    return f'startup: {head}: {parts}'

  def log(self) -> None:
    """Logs :meth:`summary` once."""
    if not self.logged:
      self.logged = True
      _LOG.info('%s', self.summary())

  def as_dict(self) -> dict[str, float]:
    return {name: round(seconds, 3) for name, seconds in self.phases()}


_LINE = re.compile(r'startup: (?:first archived row|no archived row yet)[^:]*: (.*)$')
_PHASE = re.compile(r'(.+?) ([0-9.]+) s$')


def parse_summary(log_text: str) -> Optional[dict[str, float]]:
  """``{phase: seconds}`` of the first startup line in a job's log (benchmarks keep them with
  their results), or None without one."""
  for line in log_text.splitlines():
    found = _LINE.search(line)
    if found:
      phases = {}
      for part in found.group(1).split(', '):
        phase = _PHASE.match(part.strip())
        if phase:
          phases[phase.group(1)] = float(phase.group(2))
      return phases
  return None


def first_archive_file_since(output: str, since: float) -> Optional[float]:
  """The modification time of the earliest finished archive file under ``output`` written
  at or after ``since`` (files of earlier runs are older), or None."""
  times = [m.last_updated_in_seconds
           for folder in ARCHIVE_FOLDERS.values()
           for m in finished_files(FileSystems.join(output, folder))
           if m.last_updated_in_seconds >= since - 1]
  return min(times) if times else None


def _flink_job_state(base: str, beam_job_id: str) -> tuple[Optional[str], bool]:
  """(the Flink job's state, whether every one of its subtasks runs) from the REST API."""
  name = beam_job_id.rsplit('_', 1)[0]  # the Flink job is named after the Beam job
  with urllib.request.urlopen(f'{base}/jobs/overview', timeout=5) as r:
    jobs = [j for j in json.load(r)['jobs'] if j.get('name') == name]
  if not jobs:
    return None, False
  job = max(jobs, key=lambda j: j.get('start-time', 0))
  tasks = job.get('tasks') or {}
  return job.get('state'), bool(tasks.get('total')) and tasks.get('running') == tasks['total']


class _Follower:
  """Follows a submitted job until its first archived row (see :func:`watch`)."""

  def __init__(self, timeline: StartupTimeline, base: Optional[str], beam_job_id: str,
               output: str, every_s: float):
    self.timeline, self.base, self.job_id = timeline, base, beam_job_id
    self.output, self.every_s = output, every_s
    self.since = timeline.marks[-1][1] if timeline.marks else timeline.started
    self.stopping = threading.Event()

  def step(self) -> bool:
    """One look; True once the first archived row is seen."""
    timeline = self.timeline
    if self.base and not timeline.seen(SDK_WORKERS):
      try:
        state, all_running = _flink_job_state(self.base, self.job_id)
      except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
        _LOG.debug('Flink REST API not readable at %s: %s', self.base, e)
        state, all_running = None, False
      if state == 'RUNNING':
        timeline.mark(FLINK_DEPLOYMENT)
      if all_running:
        timeline.mark(SDK_WORKERS)
    try:
      first = first_archive_file_since(self.output, self.since)
    except Exception as e:  # pylint: disable=broad-except
      # A file system that does not answer now (an object store) must not end the job.
      _LOG.debug('output %s not listable: %s', self.output, e)
      first = None
    if first is None:
      return False
    # A stage seen late (the REST API polled too rarely) ends no later than the output.
    for phase in (FLINK_DEPLOYMENT, SDK_WORKERS):
      if self.base and not timeline.seen(phase):
        timeline.mark(phase)
    timeline.mark(FIRST_OUTPUT, at=max(first, timeline.marks[-1][1]))
    return True

  def run(self) -> None:
    while not self.stopping.is_set():
      if self.step():
        self.timeline.log()
        return
      self.stopping.wait(self.every_s)


@contextlib.contextmanager
def watch(timeline: StartupTimeline, result, flink_rest_url: Optional[str], output: str,
          every_s: float = 0.5) -> Iterator[StartupTimeline]:
  """Follows the submitted job in a thread for the span of the ``with`` block and logs the
  startup line at its first archived row, or, if the block ends first, with what it saw.
  ``flink_rest_url``: the job's Flink REST API (pipelines.runners.flink_rest_url), None off
  Flink."""
  follower = _Follower(timeline, flink_rest_url,
                       getattr(result, '_job_id', None) or '', output, every_s)
  thread = threading.Thread(target=follower.run, name='startup-timeline', daemon=True)
  thread.start()
  try:
    yield timeline
  finally:
    follower.stopping.set()
    thread.join(timeout=10)
    timeline.log()
