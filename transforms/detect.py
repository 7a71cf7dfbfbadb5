"""DetectAttacks: the whole detection graph between a source and the sinks.

    SourceMessage (any stream)
      -> ParseAndClean -> Enrich -> Score (RunInference)       one branch per stream
      -> archive rows per stream
      -> network anomalies ............................. -> alerts
      -> process x memory attacks -> JoinHostAttacks -> attacks -> alerts
      every stage's failures ........................... -> dead letters

Sources and sinks are outside, so the same graph runs from Kafka on Flink and from
TestStream or files on the DirectRunner.
"""

from __future__ import annotations

import apache_beam as beam

from schemas.records import HOST_STREAMS, SCHEMAS
from transforms.alerts import host_attack_alert, network_alert
from transforms.dead_letter import DEAD_LETTER, dead_letter_row
from transforms.enrich import Enrich
from transforms.inference import Score
from transforms.join import MAX_LATENESS_S, JoinHostAttacks
from transforms.parse import ParseAndClean

STREAMS = tuple(SCHEMAS)  # network, process, memory
ARCHIVE = 'archive/{}'
ATTACKS = 'attacks'
ALERTS = 'alerts'
DEAD_LETTERS = 'dead_letter'


class DetectAttacks(beam.PTransform):
  """PCollection[SourceMessage] -> {output folder name: PCollection of rows}.

  Keys of the result: ``archive/network``, ``archive/process``, ``archive/memory``,
  ``attacks``, ``alerts``, ``dead_letter``; their rows follow :mod:`schemas.outputs`.
  """

  def __init__(self, model_dir: str, *, site: str = 'local', model_refresh_s: float = 10.0,
               allowed_lateness_s: int = MAX_LATENESS_S):
    super().__init__()
    self._model_dir = model_dir
    self._site = site
    self._model_refresh_s = model_refresh_s
    self._allowed_lateness_s = allowed_lateness_s

  def expand(self, messages):
    # The last partition catches messages of a stream this job does not know.
    branches = messages | 'ByStream' >> beam.Partition(
        lambda m, n: STREAMS.index(m.stream) if m.stream in STREAMS else n - 1,
        len(STREAMS) + 1)
    dead_letters = [branches[len(STREAMS)] | 'UnknownStream' >> beam.Map(
        lambda m: dead_letter_row(m, 'route', f'unknown stream {m.stream!r}'))]
    scored = {}
    for stream, branch in zip(STREAMS, branches):
      schema = SCHEMAS[stream]
      parsed = branch | ParseAndClean(schema)
      enriched = parsed['records'] | Enrich(schema, self._site)
      result = enriched['records'] | Score(schema, self._model_dir, self._model_refresh_s)
      scored[stream] = result['records']
      dead_letters += [parsed[DEAD_LETTER], enriched[DEAD_LETTER], result[DEAD_LETTER]]

    outputs = {ARCHIVE.format('network'): scored['network']}
    for stream in HOST_STREAMS:
      outputs[ARCHIVE.format(stream)] = scored[stream] | f'Unkey[{stream}]' >> beam.Values()
    attacks = {s: scored[s] for s in HOST_STREAMS} | JoinHostAttacks(
        allowed_lateness_s=self._allowed_lateness_s)
    network_alerts = (
        scored['network']
        | 'NetworkAnomalies' >> beam.Filter(lambda r: r['prediction'] == 1)
        | 'NetworkAlert' >> beam.Map(network_alert))
    host_alerts = attacks | 'HostAttackAlert' >> beam.Map(host_attack_alert)
    outputs[ATTACKS] = attacks
    outputs[ALERTS] = (network_alerts, host_alerts) | 'AllAlerts' >> beam.Flatten()
    outputs[DEAD_LETTERS] = dead_letters | 'AllDeadLetters' >> beam.Flatten()
    return outputs
