"""Sources that are not Kafka: JSON-lines files, one message per line (the generator's file
sink writes them). The Kafka source lives in :mod:`transforms.kafka_io`; both produce
:class:`~transforms.source.SourceMessage`, so everything downstream is the same.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import BytesCoder

from transforms.source import SourceMessage


class ReadMessageFiles(beam.PTransform):
  """{stream: file pattern} -> PCollection[SourceMessage], lines kept as raw bytes so that
  non-UTF-8 input reaches the dead-letter output instead of failing the read."""

  def __init__(self, patterns: dict[str, str]):
    super().__init__()
    self._patterns = patterns

  def expand(self, pbegin):
    streams = [
        pbegin
        | f'Read[{stream}]' >> beam.io.ReadFromText(
            pattern, coder=BytesCoder(), strip_trailing_newlines=True)
        | f'Wrap[{stream}]' >> beam.Map(
            lambda line, stream=stream, source=pattern: SourceMessage(stream, line, source))
        for stream, pattern in self._patterns.items()]
    return streams | beam.Flatten()
