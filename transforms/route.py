"""BatchByStream: SourceMessages (or MessageBatches of them) of any stream -> lists of
messages, one output per stream.

Every message crosses this step, so it is one DoFn: routing by stream and batching in the
same call. (A Partition and a BatchElements per stream were two more DoFn calls per message, a
visible share of the Python workers' time on Flink: benchmarks/README.md, "Where the time
goes".)
"""

from __future__ import annotations

import time
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from schemas.limits import MAX_BATCH_BYTES
from transforms.dead_letter import DEAD_LETTER, dead_letter_row
from transforms.source import MessageBatch, SourceMessage

ROUTE_STAGE = 'route'


class _BatchByStreamFn(beam.DoFn):
  """A message of a known stream -> its stream's pending list, output when it holds
  ``batch_size`` messages or ``max_batch_bytes`` of them, when it has been open for
  ``max_wait_s`` (checked after each input element; None: never), or when the bundle ends; a
  message of any other stream, or anything that is not a message at all -> a dead letter (stage
  ``route``). A :class:`MessageBatch` is routed message by message in one call."""

  def __init__(self, streams: Iterable[str], batch_size: int,
               max_batch_bytes: int = MAX_BATCH_BYTES, max_wait_s: Optional[float] = None):
    self._streams = tuple(streams)
    self._batch_size = batch_size
    self._max_batch_bytes = max_batch_bytes
    self._max_wait_s = max_wait_s
    self._unrouted = Metrics.counter('BatchByStream', 'unknown_stream_dead_lettered')

  def start_bundle(self):
    self._pending = {stream: [] for stream in self._streams}
    self._bytes = dict.fromkeys(self._streams, 0)
    self._since = dict.fromkeys(self._streams, 0.0)

  def process(self, element):
    messages = element.messages if isinstance(element, MessageBatch) else (element,)
    for message in messages:
      try:
        pending = self._pending.get(message.stream)
        size = len(message.value or b'')
      except Exception as e:  # pylint: disable=broad-except
        pending, error = None, e  # not a SourceMessage at all
      else:
        error = f'unknown stream {message.stream!r}'
      if pending is None:
        self._unrouted.inc()
        yield TaggedOutput(DEAD_LETTER, dead_letter_row(message, ROUTE_STAGE, error))
        continue
      stream = message.stream
      if not pending:
        self._since[stream] = time.monotonic()
      pending.append(message)
      self._bytes[stream] += size
      if len(pending) >= self._batch_size or self._bytes[stream] >= self._max_batch_bytes:
        self._pending[stream] = []
        self._bytes[stream] = 0
        yield TaggedOutput(stream, pending)
    if self._max_wait_s is not None:
      # Records reach the worker while the bundle runs (data_buffer_time_limit_ms): a batch
      # open for max_wait_s goes on now instead of waiting for the bundle's end.
      now = time.monotonic()
      for stream, pending in self._pending.items():
        if pending and now - self._since[stream] >= self._max_wait_s:
          self._pending[stream] = []
          self._bytes[stream] = 0
          yield TaggedOutput(stream, pending)

  def finish_bundle(self):
    # Batches never wait for more input: the last ones are flushed with the bundle. Like
    # BatchElements, they are stamped at the end of the (global) window.
    for stream, pending in self._pending.items():
      if pending:
        yield TaggedOutput(stream, GlobalWindows.windowed_value_at_end_of_window(pending))


class BatchByStream(beam.PTransform):
  """PCollection[SourceMessage] or PCollection[MessageBatch] in the global window ->
  ``result[stream]``: lists of up to
  ``batch_size`` messages and about ``max_batch_bytes`` (one message may pass it) of that
  stream (one list per stream and bundle at least; with ``max_wait_s``, also one when a list
  has been open that long), and ``result[DEAD_LETTER]``: a dead-letter row for each message of
  a stream not in ``streams``.
  """

  def __init__(self, streams: Iterable[str], batch_size: int,
               max_batch_bytes: int = MAX_BATCH_BYTES, max_wait_s: Optional[float] = None):
    super().__init__()
    self._streams = tuple(streams)
    self._batch_size = batch_size
    self._max_batch_bytes = max_batch_bytes
    self._max_wait_s = max_wait_s

  def expand(self, messages):
    outputs = messages | beam.ParDo(
        _BatchByStreamFn(self._streams, self._batch_size, self._max_batch_bytes,
                         self._max_wait_s)).with_outputs(
            *self._streams, DEAD_LETTER)
    for stream in self._streams:
      outputs[stream].element_type = beam.typehints.List[SourceMessage]
    return outputs
