"""BatchByStream: SourceMessages of any stream -> lists of messages, one output per stream.

Every message crosses this step, so it is one DoFn: routing by stream and batching in the
same call. (A Partition and a BatchElements per stream were two more DoFn calls per message,
about 7% of the Python workers' time on Flink in py-spy.)
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from transforms.dead_letter import DEAD_LETTER, dead_letter_row
from transforms.source import SourceMessage

ROUTE_STAGE = 'route'


class _BatchByStreamFn(beam.DoFn):
  """A message of a known stream -> its stream's pending list, output when full or when the
  bundle ends; a message of any other stream -> a dead letter (stage ``route``)."""

  def __init__(self, streams: Iterable[str], batch_size: int):
    self._streams = tuple(streams)
    self._batch_size = batch_size
    self._unrouted = Metrics.counter('BatchByStream', 'unknown_stream_dead_lettered')

  def start_bundle(self):
    self._pending = {stream: [] for stream in self._streams}

  def process(self, message: SourceMessage):
    pending = self._pending.get(message.stream)
    if pending is None:
      self._unrouted.inc()
      yield TaggedOutput(DEAD_LETTER, dead_letter_row(
          message, ROUTE_STAGE, f'unknown stream {message.stream!r}'))
      return
    pending.append(message)
    if len(pending) >= self._batch_size:
      self._pending[message.stream] = []
      yield TaggedOutput(message.stream, pending)

  def finish_bundle(self):
    # Batches never wait for more input: the last ones are flushed with the bundle. Like
    # BatchElements, they are stamped at the end of the (global) window.
    for stream, pending in self._pending.items():
      if pending:
        yield TaggedOutput(stream, GlobalWindows.windowed_value_at_end_of_window(pending))


class BatchByStream(beam.PTransform):
  """PCollection[SourceMessage] in the global window -> ``result[stream]``: lists of up to
  ``batch_size`` messages of that stream (one list per stream and bundle at least), and
  ``result[DEAD_LETTER]``: a dead-letter row for each message of a stream not in ``streams``.
  """

  def __init__(self, streams: Iterable[str], batch_size: int):
    super().__init__()
    self._streams = tuple(streams)
    self._batch_size = batch_size

  def expand(self, messages):
    outputs = messages | beam.ParDo(
        _BatchByStreamFn(self._streams, self._batch_size)).with_outputs(
            *self._streams, DEAD_LETTER)
    for stream in self._streams:
      outputs[stream].element_type = beam.typehints.List[SourceMessage]
    return outputs
