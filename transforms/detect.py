"""DetectAttacks: the whole detection graph between a source and the sinks.

    SourceMessage (any stream)
      -> ParseAndClean (BatchByStream, then ParseBatches per stream)
      -> Enrich -> Score                                    one branch per stream,
                                                            on RecordBatches
      -> archive batches per stream
      -> network anomalies ............................. -> alerts
      -> network connection counts -> DetectVolumeAnomalies -> alerts (volume_anomaly)
      -> process x memory attacks -> JoinHostAttacks -> attacks -> alerts
                                     (records too late for it -> dead letters, stage join)
      alerts -> GroupIncidents ........................... -> incidents
      every stage's failures ........................... -> dead letters

Up to scoring and archiving, records travel in batches (transforms/batch.py); only the
records predicted as attacks become row dicts, for alerts and the join.

Sources and sinks are outside, so the same graph runs from Kafka on Flink and from
TestStream or files on the DirectRunner.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from model import signing
from schemas.layout import ALERTS, ARCHIVE_FOLDERS, ATTACKS, DEAD_LETTERS, INCIDENTS
from schemas.outputs import ALERT_KINDS
from schemas.records import HOST_STREAMS, NETWORK, SCHEMAS, STREAMS
from transforms.alerts import host_attack_alert, network_alert
from transforms.dead_letter import DEAD_LETTER
from transforms.batch import RecordBatch
from transforms.enrich import Enrich, EventTimeBounds, join_key
from transforms.incidents import DEFAULT_GAP_S, DEFAULT_UPDATE_S, GroupIncidents
from transforms.inference import Score
from transforms.join import MAX_LATENESS_S, JoinHostAttacks, clock_hint
from transforms.parse import DEFAULT_BATCH_SIZE, ParseAndClean
from transforms.volume import DetectVolumeAnomalies, VolumeParams

ALERTS_BY_KIND = {kind: f'{ALERTS}:{kind}' for kind in ALERT_KINDS}  # not folders: see expand


def predicted_attacks(batch: RecordBatch) -> Iterator[dict]:
  """The rows of a scored batch that the model flagged."""
  flagged = [p for p, prediction in enumerate(batch.columns['prediction']) if prediction == 1]
  return batch.take(flagged).rows()


def batch_clock_hint(batch: RecordBatch) -> Iterator[TimestampedValue]:
  """A scored batch -> the join clock's hint of its event-time span (none if it is empty)."""
  times = batch.columns['event_time']
  if times:
    yield clock_hint(min(times).timestamp(), max(times).timestamp())


def keyed_attacks(batch: RecordBatch, key_of: Callable[[dict], Any]
                  ) -> Iterator[TimestampedValue]:
  """Flagged host rows keyed for the join and stamped with their event time (a batch's own
  timestamp is not any one record's), after the batch's event-time span for the join's clock
  (first, so that a stream's first batch starts the clock before its records reach it)."""
  yield from batch_clock_hint(batch)
  for row in predicted_attacks(batch):
    yield TimestampedValue((key_of(row), row), row['event_time'].timestamp())


class DetectAttacks(beam.PTransform):
  """PCollection[SourceMessage] -> {output folder name: PCollection of rows}.

  Keys of the result: ``archive/network``, ``archive/process``, ``archive/memory``,
  ``attacks``, ``alerts``, ``incidents``, ``dead_letter`` (output folders; their rows follow
  :mod:`schemas.outputs`), and ``alerts:network_anomaly`` / ``alerts:host_attack`` /
  ``alerts:volume_anomaly``: the alerts again, by kind.

  ``volume``: the volume detector's settings (transforms/volume.py), None for the defaults;
  ``incident_gap_s``: the quiet time that closes an incident; ``incident_update_s``: at most one
  update of an open incident per this much event time (transforms/incidents.py).
  """

  def __init__(self, model_dir: str, *, site: str = 'local', model_refresh_s: float = 10.0,
               allowed_lateness_s: int = MAX_LATENESS_S, batch_size: int = DEFAULT_BATCH_SIZE,
               event_time_bounds: EventTimeBounds = EventTimeBounds(),
               public_keys: Optional[signing.PublicKeys] = None,
               decoders: Optional[dict[str, Callable[[bytes], Any]]] = None,
               volume: Optional[VolumeParams] = None, incident_gap_s: float = DEFAULT_GAP_S,
               incident_update_s: float = DEFAULT_UPDATE_S):
    super().__init__()
    self._volume = volume or VolumeParams()
    self._incident_gap_s = incident_gap_s
    self._incident_update_s = incident_update_s
    self._decoders = decoders  # stream -> decoder of a stream not in JSON (transforms/parse.py)
    self._event_time_bounds = event_time_bounds
    self._public_keys = public_keys  # None: the default key file (model/signing.py)
    self._batch_size = batch_size
    self._model_dir = model_dir
    self._site = site
    self._model_refresh_s = model_refresh_s
    self._allowed_lateness_s = allowed_lateness_s

  def expand(self, messages):
    parsed = messages | ParseAndClean([SCHEMAS[s] for s in STREAMS], self._batch_size,
                                      self._decoders)
    dead_letters = [parsed[DEAD_LETTER]]
    scored = {}
    for stream in STREAMS:
      schema = SCHEMAS[stream]
      enriched = parsed[stream] | Enrich(schema, self._site, self._event_time_bounds)
      result = enriched['records'] | Score(schema, self._model_dir, self._model_refresh_s,
                                          self._public_keys)
      scored[stream] = result['records']
      dead_letters += [enriched[DEAD_LETTER], result[DEAD_LETTER]]

    outputs = {ARCHIVE_FOLDERS[stream]: scored[stream] for stream in STREAMS}
    join_inputs = {
        stream: scored[stream] | f'{stream}PredictedAttacks' >> beam.FlatMap(
            keyed_attacks, join_key(SCHEMAS[stream]))
        for stream in HOST_STREAMS}
    # The streams not joined move the same watermark: the join's clock hears of them too.
    elsewhere = [scored[stream] | f'{stream}ClockHint' >> beam.FlatMap(batch_clock_hint)
                 for stream in STREAMS if stream not in HOST_STREAMS]
    if elsewhere:
      join_inputs['clock'] = elsewhere | 'ClockElsewhere' >> beam.Flatten()
    joined = join_inputs | JoinHostAttacks(allowed_lateness_s=self._allowed_lateness_s)
    attacks = joined['attacks']
    dead_letters.append(joined[DEAD_LETTER])  # records too late for the join (stage join)
    network_alerts = (
        scored[NETWORK.stream]
        | 'NetworkAnomalies' >> beam.FlatMap(predicted_attacks)
        | 'NetworkAlert' >> beam.Map(network_alert))
    volume_alerts = scored[NETWORK.stream] | 'VolumeAnomalies' >> DetectVolumeAnomalies(
        self._volume)
    host_alerts = attacks | 'HostAttackAlert' >> beam.Map(host_attack_alert)
    outputs[ATTACKS] = attacks
    outputs[ALERTS] = ((network_alerts, volume_alerts, host_alerts)
                       | 'AllAlerts' >> beam.Flatten())
    outputs[INCIDENTS] = outputs[ALERTS] | 'Incidents' >> GroupIncidents(
        self._incident_gap_s, self._incident_update_s)
    # Also apart, for sinks that should not join the two: a flatten of two stages' outputs
    # is a separate operator on Flink, and network alerts would wait on its buffers.
    outputs[ALERTS_BY_KIND['network_anomaly']] = network_alerts
    outputs[ALERTS_BY_KIND['host_attack']] = host_alerts
    outputs[ALERTS_BY_KIND['volume_anomaly']] = volume_alerts
    outputs[DEAD_LETTERS] = dead_letters | 'AllDeadLetters' >> beam.Flatten()
    return outputs
