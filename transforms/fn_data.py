"""A Python SDK worker's output to the runner, sent while a bundle runs, whole elements only.

Without ``--experiments=data_buffer_time_limit_ms=N`` a Python worker sends a bundle's output
to the runner when the bundle ends (or when 10 MB are buffered), so on Flink a record's alert
waits for its Python bundle to close before the Kafka writer even sees it. With the
experiment, Beam's ``TimeBasedBufferingClosableOutputStream`` flushes from a thread of its
own every N ms, whatever the buffer holds at that moment: half an encoded element too. The
runner then fails decoding the rest of the bundle (``EOFException`` in
``BeamFnDataInboundObserver``, "Failed to finish remote bundle") and Flink restarts the job.

:func:`install` replaces that stream with :class:`ElementBoundaryFlushStream`, which flushes
only after a whole element was written (Beam calls ``maybe_flush`` then, from the bundle's own
thread), once N ms have passed since its last flush, and at the bundle's end as before. There
is no flushing thread: an element written just after a flush goes out with the next element
of that output or with the bundle's end, never later than without the experiment. Without
the experiment nothing changes (Beam's size-based stream is kept).

The runner side (Beam Java's outbound aggregator) honours the same experiment with whole
elements already, so records reach the Python worker while the bundle is still open.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from apache_beam.runners.worker import data_plane


class ElementBoundaryFlushStream(data_plane.SizeBasedBufferingClosableOutputStream):
  """Buffers encoded elements; ``maybe_flush`` (called after each whole element) sends them
  once ``time_flush_threshold_ms`` have passed since the last flush, or when the buffer holds
  more than the size threshold."""

  def __init__(self, close_callback: Optional[Callable[[bytes], None]] = None,
               flush_callback: Optional[Callable[[bytes], None]] = None,
               time_flush_threshold_ms: int = 10, clock: Callable[[], float] = time.monotonic,
               **kwargs):
    super().__init__(close_callback, flush_callback=flush_callback, **kwargs)
    if time_flush_threshold_ms <= 0:
      raise ValueError('time_flush_threshold_ms must be positive')
    self._interval_s = time_flush_threshold_ms / 1000.0
    self._clock = clock
    self._last_flush = clock() - self._interval_s  # the first element goes out at once

  def maybe_flush(self) -> None:
    now = self._clock()
    if self.size() > self._size_flush_threshold or (
        self.size() and now - self._last_flush >= self._interval_s):
      self.flush()
      self._last_flush = now


_BEAM_CREATE = data_plane.ClosableOutputStream.create


def _create(close_callback, flush_callback, data_buffer_time_limit_ms):
  if data_buffer_time_limit_ms > 0:
    return ElementBoundaryFlushStream(close_callback, flush_callback=flush_callback,
                                      time_flush_threshold_ms=data_buffer_time_limit_ms)
  return _BEAM_CREATE(close_callback, flush_callback, data_buffer_time_limit_ms)


def install() -> None:
  """Makes this process's Beam data channels use :class:`ElementBoundaryFlushStream` for the
  time-limited buffering (idempotent). Called at every worker's start, before its harness
  (pipelines/sdk_worker.py), so that every stage of the worker has it, those that do not read
  Kafka too; and by :class:`transforms.kafka_io.DecodeBatchesFn` ``setup`` for workers started
  otherwise (LOOPBACK)."""
  data_plane.ClosableOutputStream.create = staticmethod(_create)


def installed() -> bool:
  return data_plane.ClosableOutputStream.create is _create
