"""Where an SDK worker's CPU goes, DoFn by DoFn: a measuring aid for the benchmarks.

Off unless ``ATTACK_DETECTION_STAGE_CPU_DIR`` names a folder (``python -m benchmarks.throughput
--stage_cpu`` sets it for its job). Then each SDK worker (pipelines/sdk_worker.py) times, with
its own thread's CPU clock:

* each method (``process``, ``finish_bundle``, ``on_timer``) of the DoFns of this project's
  packages and of Beam's RunInference, with its calls and the elements it was handed (the
  length of a batch);
* each bundle (``SdkWorker.process_bundle``), under its descriptor id and the DoFns that ran in
  it: a fused stage's whole cost, Beam's own work on its elements included;

and every ``SNAPSHOT_S`` appends a snapshot (JSON lines: the wall clock, the process's CPU,
each thread's CPU by name, then the counters above) to ``<folder>/<pid>.jsonl``. A reader
takes two snapshots and divides the difference by the records between them
(:func:`window`): per-record costs of a steady window, apart from start-up.

A generator DoFn's time counts only inside its own steps: Beam runs the DoFns downstream of it
on each output it yields, inside the yield, and their time is theirs. Plain functions a stage
calls through ``beam.Map`` are not DoFns of ours and count in the bundle's time only.
"""

from __future__ import annotations

import collections
import functools
import inspect
import json
import os
import re
import threading
import time
from typing import Any, Iterable, Optional

import apache_beam as beam

DIR_ENV = 'ATTACK_DETECTION_STAGE_CPU_DIR'
SNAPSHOT_S = 2.0
_PACKAGES = ('transforms', 'model', 'pipelines', 'schemas')
_METHODS = ('process', 'finish_bundle', 'on_timer')
_NUMBERED = re.compile(r'[-_]?\d+')

_cpu: collections.Counter = collections.Counter()
_calls: collections.Counter = collections.Counter()
_elements: collections.Counter = collections.Counter()
_local = threading.local()
_lock = threading.Lock()  # bundles run on several threads; a += on a Counter is two steps


def _charge(key: str, seconds: float) -> None:
  with _lock:
    _cpu[key] += seconds


def _key(cls: type, method: str) -> str:
  return f'{cls.__module__}.{cls.__qualname__}.{method}'


def _count_call(key: str, args: tuple) -> None:
  try:
    elements = len(args[1])  # args[0] is the DoFn
  except (IndexError, TypeError):
    elements = 0
  with _lock:
    _calls[key] += 1
    _elements[key] += elements
  seen = getattr(_local, 'seen', None)
  if seen is not None:
    seen.add(key.rsplit('.', 2)[-2])


def timed_method(key: str, fn):
  """``fn`` (a DoFn method) counting its thread CPU under ``key``; a generator's only inside
  its own steps."""
  if inspect.isgeneratorfunction(fn):
    @functools.wraps(fn)
    def timed_generator(*args, **kwargs):
      _count_call(key, args)
      steps = fn(*args, **kwargs)
      while True:
        started = time.thread_time()
        try:
          item = next(steps)
        except StopIteration:
          return
        finally:
          _charge(key, time.thread_time() - started)
        yield item
    timed = timed_generator
  else:
    @functools.wraps(fn)
    def timed_function(*args, **kwargs):
      _count_call(key, args)
      started = time.thread_time()
      try:
        return fn(*args, **kwargs)
      finally:
        _charge(key, time.thread_time() - started)
    timed = timed_function
  timed.stage_cpu_timed = True
  return timed


def _ours(cls: type) -> bool:
  return (cls.__module__.split('.')[0] in _PACKAGES
          or cls.__qualname__ == '_RunInferenceDoFn')


def _subclasses(cls: type) -> Iterable[type]:
  for sub in cls.__subclasses__():
    yield sub
    yield from _subclasses(sub)


def time_dofns() -> None:
  """Wraps the methods of every DoFn class of ours imported so far. Beam binds a DoFn's
  methods when it sets the DoFn up, so this runs at the worker's start, once the project's
  modules are imported (:func:`install_from_environment`)."""
  for cls in set(_subclasses(beam.DoFn)):
    if not _ours(cls):
      continue
    for method in _METHODS:
      fn = cls.__dict__.get(method)
      if fn is not None and not getattr(fn, 'stage_cpu_timed', False):
        setattr(cls, method, timed_method(_key(cls, method), fn))


def _time_bundles() -> None:
  from apache_beam.runners.worker import sdk_worker  # pylint: disable=import-outside-toplevel
  process_bundle = sdk_worker.SdkWorker.process_bundle
  if getattr(process_bundle, 'stage_cpu_timed', False):
    return

  @functools.wraps(process_bundle)
  def timed_bundle(self, request, instruction_id):
    _local.seen = set()
    started = time.thread_time()
    try:
      return process_bundle(self, request, instruction_id)
    finally:
      stage = (f'bundle {request.process_bundle_descriptor_id}: '
               + ('+'.join(sorted(_local.seen)) or 'no DoFn of ours'))
      _charge(stage, time.thread_time() - started)
      with _lock:
        _calls[stage] += 1
      _local.seen = None
  timed_bundle.stage_cpu_timed = True
  sdk_worker.SdkWorker.process_bundle = timed_bundle


def _thread_cpu() -> dict[str, float]:
  """CPU seconds per thread name (Python's names; threads Python did not start: 'native')."""
  names = {t.native_id: t.name for t in threading.enumerate()}
  ticks = os.sysconf('SC_CLK_TCK')
  out: collections.Counter = collections.Counter()
  for tid in os.listdir('/proc/self/task'):
    try:
      with open(f'/proc/self/task/{tid}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue  # the thread ended
    # "Thread-12 (run)" and "Thread-13 (run)" are one kind of thread.
    name = _NUMBERED.sub('', names.get(int(tid), 'native'))
    out[name] += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
  return dict(out)


def snapshot() -> dict[str, Any]:
  usage = os.times()
  with _lock:
    methods = {k: [round(v, 6), _calls[k], _elements[k]] for k, v in _cpu.items()}
  return {'time': time.time(), 'process_cpu': usage.user + usage.system,
          'threads': _thread_cpu(), 'methods': methods}


def _write_snapshot(folder: str) -> None:
  with open(os.path.join(folder, f'{os.getpid()}.jsonl'), 'a', encoding='utf-8') as f:
    f.write(json.dumps(snapshot()) + '\n')


def _write_snapshots(folder: str) -> None:
  while True:
    time.sleep(SNAPSHOT_S)
    _write_snapshot(folder)


def install_from_environment() -> bool:
  """In an SDK worker: starts the timing when ``DIR_ENV`` is set; True when it did."""
  folder = os.environ.get(DIR_ENV)
  if not folder:
    return False
  os.makedirs(folder, exist_ok=True)
  # A fresh worker has not imported the DoFns' modules yet (a forked one has): the same
  # imports the fork server preloads.
  from pipelines import fork_server  # pylint: disable=import-outside-toplevel
  fork_server.preload(modules=(), packages=fork_server.PRELOAD_PACKAGES)
  time_dofns()
  _time_bundles()
  threading.Thread(target=_write_snapshots, args=(folder,), name='stage-cpu',
                   daemon=True).start()
  return True


# ---- reading the snapshots --------------------------------------------------------------------


def read_snapshots(folder: str) -> dict[str, list[dict[str, Any]]]:
  """``{worker file: [snapshot, ...]}`` of every worker that wrote to ``folder``."""
  out = {}
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
    with open(os.path.join(folder, name), encoding='utf-8') as f:
      rows = [json.loads(line) for line in f if line.strip()]
    if rows:
      out[name] = rows
  return out


def _at(rows: list[dict[str, Any]], when: float) -> Optional[dict[str, Any]]:
  """The last snapshot at or before ``when`` (None before the first)."""
  best = None
  for row in rows:
    if row['time'] <= when:
      best = row
  return best


def window(snapshots: dict[str, list[dict[str, Any]]], start: float, end: float,
           records: int) -> dict[str, float]:
  """Microseconds of CPU per record between the wall-clock times ``start`` and ``end`` (each
  worker's last snapshot at or before them), summed over the workers: ``process`` (the
  workers' whole CPU), ``thread <name>``, and each timed method and bundle by its key."""
  totals: collections.Counter = collections.Counter()
  for rows in snapshots.values():
    last = _at(rows, end)
    if last is None:
      continue
    first = _at(rows, start) or {'process_cpu': 0.0, 'threads': {}, 'methods': {}}
    totals['process'] += last['process_cpu'] - first['process_cpu']
    for name, cpu in last['threads'].items():
      totals[f'thread {name}'] += cpu - first['threads'].get(name, 0.0)
    for key, (cpu, _, _) in last['methods'].items():
      totals[key] += cpu - first['methods'].get(key, [0.0])[0]
  return {k: round(v / records * 1e6, 1) for k, v in totals.items()
          if records > 0 and v / records * 1e6 >= 0.05}
