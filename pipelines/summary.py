"""The end-of-run summary: what came in, what was archived, dead-lettered and alerted.

The counts are Beam's counters. A portable runner reports them only for a job that ended by
itself; a job stopped from outside (``--run_for_s``, a cancel, stop-with-savepoint) reports
none. On Flink the summary therefore also reads them while the job runs, from Flink's REST API
(the embedded Flink's or the cluster's, see :func:`pipelines.runners.flink_rest_url`), where
Beam's Flink runner registers every counter as an operator metric named
``<namespace>.<name>``, and uses the last reading when the runner reports nothing::

    with summary.watch(result, options) as watcher:
      result.wait_until_finish()
    print_summary(result, opts, fallback=watcher.last)
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from typing import Iterator, Optional

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from schemas.layout import FOLDERS
from schemas.records import SCHEMAS
from pipelines import runners
from transforms.join import LATE_NAMESPACE, LATE_SUFFIX

_LOG = logging.getLogger(__name__)

# The consumer lag: the sum, over the splits of the Kafka read, of KafkaIO's reader gauge
# ``source.splits/<split>.backlog_elements`` (Beam's SourceMetrics: the records between the
# split's position and its partitions' newest offsets, -1 while unknown, which is left out).
CONSUMER_LAG = 'consumer_lag'
BACKLOG_ELEMENTS = 'backlog_elements'


def counters(result) -> dict[str, int]:
  """Beam counters summed over steps, by name (e.g. ``network_messages``), and the consumer
  lag (:data:`CONSUMER_LAG`) when the Kafka read reported one."""
  totals: dict[str, int] = defaultdict(int)
  try:
    queried = result.metrics().query(MetricsFilter())
  except Exception:  # pylint: disable=broad-except
    return {}  # a runner that cannot report metrics still ran the job
  for counter in queried['counters']:
    totals[f'{counter.key.metric.namespace}.{counter.key.metric.name}'] += (
        counter.committed if counter.committed is not None else counter.attempted or 0)
  for gauge in queried.get('gauges', []):
    value = gauge.committed if gauge.committed is not None else gauge.attempted
    if gauge.key.metric.name.endswith(BACKLOG_ELEMENTS) and value is not None:
      _add_backlog(totals, value.value)
  return dict(totals)


def _add_backlog(totals: dict[str, int], value) -> None:
  """Adds one split's backlog gauge to the consumer lag (unknown, -1, adds nothing)."""
  if value is not None and int(value) >= 0:
    totals[CONSUMER_LAG] = totals.get(CONSUMER_LAG, 0) + int(value)


def _get(base: str, path: str):
  with urllib.request.urlopen(base + path, timeout=5) as r:
    return json.load(r)


def _beam_metric(rest_name: str) -> Optional[str]:
  """``ns.name`` of a Beam counter from its name in Flink's REST API, where Beam's
  ``<namespace>.<name>`` shows as ``<namespace>_<name>`` (Flink replaces the dot); None for
  Flink's own metrics and Beam's per-PCollection/transform monitoring (``ref_...``, ``fn/...``).
  The split is at the first underscore: the summary's namespaces have none."""
  if '_' not in rest_name or ':' in rest_name or rest_name.startswith(('ref_', 'fn/')):
    return None
  namespace, name = rest_name.split('_', 1)
  return f'{namespace}.{name}'


def flink_counters(base: str, flink_job_id: str) -> dict[str, int]:
  """Beam's counters of a running Flink job, summed over operators and subtasks, by
  ``namespace.name`` (``ParseAndClean.network_messages``), from the REST API at ``base``, and
  the consumer lag (:data:`CONSUMER_LAG`) from KafkaIO's per-split backlog gauges."""
  totals: dict[str, int] = defaultdict(int)
  for vertex in _get(base, f'/jobs/{flink_job_id}')['vertices']:
    path = f'/jobs/{flink_job_id}/vertices/{vertex["id"]}/metrics'
    # "<subtask>.<operator name>.<metric>"; the metric's own dots are underscores here.
    wanted = {m['id']: key for m in _get(base, path)
              if (key := _beam_metric(m['id'].rsplit('.', 1)[-1]))}
    ids = sorted(wanted)
    for start in range(0, len(ids), 20):
      query = urllib.parse.quote(','.join(ids[start:start + 20]), safe=',')
      for metric in _get(base, f'{path}?get={query}'):
        try:
          value = int(float(metric.get('value') or 0))
        except ValueError:
          continue  # a distribution of Beam's, not a count
        if wanted[metric['id']].endswith(BACKLOG_ELEMENTS):
          _add_backlog(totals, value)
        else:
          totals[wanted[metric['id']]] += value
  return dict(totals)


class FlinkCounterWatch:
  """Reads :func:`flink_counters` of one job every ``every_s`` seconds in a thread; ``last``
  holds the latest reading with any count in it (empty until then)."""

  def __init__(self, base: str, beam_job_id: str, every_s: float = 3.0,
               flink_job_id: Optional[str] = None):
    self.base, self.beam_job_id, self.every_s = base, beam_job_id, every_s
    self.flink_job_id = flink_job_id  # known up front for an uber jar
    self.last: dict[str, int] = {}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, name='flink-counters', daemon=True)

  def read(self) -> dict[str, int]:
    """One reading now (also stored in ``last`` when it counts anything)."""
    try:
      jid = self.flink_job_id or runners.running_flink_job(self.base, self.beam_job_id)
      totals = flink_counters(self.base, jid) if jid else {}
    except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
      _LOG.debug('Flink metrics not readable at %s: %s', self.base, e)
      return {}
    if any(totals.values()):
      self.last = totals
    return totals

  def _loop(self) -> None:
    while not self._stop.wait(self.every_s):
      self.read()

  def start(self) -> 'FlinkCounterWatch':
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stop.set()
    self._thread.join(timeout=10)


class _NoWatch:
  last: dict[str, int] = {}

  def read(self) -> dict[str, int]:
    return {}


@contextlib.contextmanager
def watch(result, options: PipelineOptions) -> Iterator[FlinkCounterWatch | _NoWatch]:
  """Reads the job's counters from Flink while the ``with`` block runs (nothing off Flink);
  call ``read()`` once more just before stopping the job from outside."""
  base = runners.flink_rest_url(options)
  job_id = getattr(result, '_job_id', None)
  if not base or not job_id:
    yield _NoWatch()
    return
  watcher = FlinkCounterWatch(base, job_id,
                              flink_job_id=runners.uber_jar_flink_job(result)).start()
  try:
    yield watcher
  finally:
    watcher.stop()


def print_summary(result, opts, out=None,
                  fallback: Optional[dict[str, int]] = None) -> dict[str, int]:
  """Prints the run's counts (``fallback``: counters read while the job ran, used when the
  runner reports none); returns them."""
  totals = counters(result)
  # A job stopped from outside reports zeros, or nothing, for what it counted.
  if fallback and (result.state != PipelineState.DONE or not any(totals.values())):
    totals = dict(fallback)
  if not any(totals.values()):
    # A cancelled portable job reports no metrics: the outputs are the record of the run.
    print(f'\nRun summary ({result.state}): the runner reported no metrics; count the outputs '
          f'under {opts.output} (python -m pipelines.monitor --output {opts.output} --once).',
          file=out or sys.stderr)
    return totals
  dead_by_stream, late_by_stream = defaultdict(int), defaultdict(int)
  for name, value in totals.items():
    if name.endswith('_dead_lettered'):
      dead_by_stream[name.split('.')[-1].rsplit('_dead_lettered', 1)[0]] += value
    elif name.startswith(f'{LATE_NAMESPACE}.') and name.endswith(LATE_SUFFIX):
      # Records too late for the host join are dead letters too (stage join).
      stream = name.split('.')[-1].rsplit(LATE_SUFFIX, 1)[0]
      dead_by_stream[stream] += value
      late_by_stream[stream] += value
  lines = [f'\nRun summary ({result.state}), outputs under {opts.output}:',
           f"  {'stream':<10}{'messages':>12}{'records':>12}{'dead letters':>14}"]
  for stream in SCHEMAS:
    lines.append(
        f"  {stream:<10}{totals.get(f'ParseAndClean.{stream}_messages', 0):>12}"
        f"{totals.get(f'ParseAndClean.{stream}_cleaned', 0):>12}{dead_by_stream[stream]:>14}")
  if CONSUMER_LAG in totals:
    lines.append(f'  consumer lag: {totals[CONSUMER_LAG]} records behind the newest Kafka offsets '
                 '(KafkaIO\'s backlog estimate, last reading)')
  if late_by_stream:
    lines.append('  late for the host join (dead letters, stage join): ' + ', '.join(
        f'{stream} {count}' for stream, count in sorted(late_by_stream.items())))
  lines.append('  rows written:')
  for folder in FOLDERS:
    rows = totals.get(f'WritePartitionedParquet.{folder}_rows', 0)
    files = totals.get(f'WritePartitionedParquet.{folder}_files', 0)
    lines.append(f'    {folder + "/":<18}{rows:>10} rows in {files} files')
  print('\n'.join(lines), file=out or sys.stderr)
  return totals
