"""GroupIncidents: alerts -> incidents, what an analyst works through instead of an alert flood.

    alert rows (every kind)
      -> keyed by what an incident shares:
           network_anomaly: site, service, flag (a connection that ended normally, flag SF);
                            site, flag across services (any other flag: S0, REJ, RSTO, ...)
           volume_anomaly: site, protocol/service/flag (and size class, for a size key)
           host_attack: site, machine, program
      -> IncidentFn (state + event-time timers): in event-time order, an alert joins the open
         incident of its key unless it comes more than ``gap_s`` after its last alert; an
         incident closes once the watermark is ``gap_s`` past its last alert
      -> incident rows (schemas.outputs.INCIDENT_SCHEMA): ``open`` at its first alert,
         ``updated`` at most once per ``update_s`` of event time while alerts keep coming,
         ``closed`` at the end

Exactly once on replay: alerts are buffered until the watermark passes them and then taken in
(event time, event id) order, so which alert opens an incident, and what each row says, depend
only on the alerts and their event times, not on how they arrived. An incident's id is uuid5 of
its key and its first alert's id, and each row is identified by (incident_id, update_seq): a
replay after a restart writes and sends the same rows, which consumers drop as repeats.

Late alerts (event time before what was already evaluated for their key) join the open
incident when they lie within ``gap_s`` of its span; one older than that belonged to an incident
already closed, and becomes an incident of its own, opened and closed at once (counted in
``incident_late_alerts``): never dropped, never reopening a closed incident.

Network alerts of connections that did not end normally are grouped by their flag across
services: a SYN flood or a scan sweeps many services with the same failure (half-open, refused,
reset), and one incident per service would split one attack into dozens. Such an incident's
``service`` is null; its ``top_features`` and reasons say what its alerts share.

Severity: ``high`` for a host attack, an incident of 100 or more alerts, or a top score of
0.99 or more; ``medium`` from 10 alerts or a top score of 0.9; ``low`` otherwise.
"""

from __future__ import annotations

import collections
import datetime
from typing import Any, Iterator, Optional

import apache_beam as beam
import orjson
from apache_beam.coders import PickleCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms import userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from transforms.alerts import to_json
from transforms.dead_letter import utc_now
from transforms.ids import uuid5

DEFAULT_GAP_S = 60.0
# The flag of a connection that was established and ended normally; network alerts of any other
# flag are grouped across services.
COMPLETED_FLAG = 'SF'
ANY = '*'  # a key part that stands for every value
DEFAULT_UPDATE_S = 30.0
TOP_FEATURES = 3
UTC = datetime.timezone.utc
# The alert fields an incident keeps of each alert while it is buffered.
_KEPT = ('event_id', 'kind', 'site', 'score', 'service', 'flag', 'protocol_type', 'machine',
         'program')


def group_key(alert: dict[str, Any]) -> str:
  """What the incidents of an alert share, as text: ``kind|site|...``."""
  kind = alert.get('kind')
  site = alert.get('site')
  if kind == 'host_attack':
    parts = (alert.get('machine'), alert.get('program'))
  elif kind == 'volume_anomaly':
    parts = (alert.get('protocol_type') or '*', alert.get('service') or '*',
             alert.get('flag') or '*')
    size = _size_class(alert)
    if size is not None:
      parts += (f'size {size}',)  # a size key's surge (transforms/volume.py): its own incident
  else:
    flag = alert.get('flag')
    parts = (alert.get('service') if flag == COMPLETED_FLAG else ANY, flag)
  return '|'.join(str(p) for p in (kind, site) + parts)


def _size_class(alert: dict[str, Any]) -> Any:
  """The src_bytes size class of a volume alert of a size key, else None."""
  details = alert.get('details')
  if not details or 'size_class' not in details:
    return None
  try:
    return orjson.loads(details).get('size_class')
  except (orjson.JSONDecodeError, AttributeError):
    return None


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = datetime.timedelta(microseconds=1)


def _micros(when: Any) -> int:
  """An event time as integer microseconds (what timers hold: float seconds would round)."""
  if isinstance(when, datetime.datetime):
    if when.tzinfo is None:
      when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROS
  return int(round(float(when) * 1e6))


def _timer_time(micros: int) -> Timestamp:
  """A timer at or just after ``micros``: runners keep timers in milliseconds (the portable
  runners round them down), and a timer before an alert's time would never take it."""
  return Timestamp(micros=-(-micros // 1000) * 1000)


def _time(micros: int) -> datetime.datetime:
  return _EPOCH + datetime.timedelta(microseconds=micros)


def _decoded_reasons(alert: dict[str, Any]) -> list:
  text = alert.get('reasons')
  if not text:
    return []
  try:
    reasons = orjson.loads(text)
  except orjson.JSONDecodeError:
    return []
  return reasons if isinstance(reasons, list) else []


def compact_alert(alert: dict[str, Any]) -> dict[str, Any]:
  """What an incident needs of an alert (the buffer holds these, not whole alerts)."""
  kept = {k: alert.get(k) for k in _KEPT}
  kept['t'] = _micros(alert['event_time'])
  kept['reasons'] = _decoded_reasons(alert)
  return kept


def severity(kind: str, count: int, max_score: float) -> str:
  if kind == 'host_attack' or count >= 100 or max_score >= 0.99:
    return 'high'
  if count >= 10 or max_score >= 0.9:
    return 'medium'
  return 'low'


class Incident:
  """One open incident (kept in state between timers)."""

  def __init__(self, key: str, alert: dict[str, Any]):
    self.key = key
    # A network incident of one flag across services names no service.
    self.across_services = (alert.get('kind') == 'network_anomaly'
                            and alert.get('flag') != COMPLETED_FLAG)
    self.incident_id = uuid5(f'incident|{key}|{alert["event_id"]}')
    self.first = alert
    self.first_seen = self.last_seen = alert['t']
    self.last_alert_id = alert['event_id']
    self.count = 0
    self.max_score = float('-inf')
    self.reasons: list = []
    self.features: collections.Counter = collections.Counter()
    self.seq = -1
    self.emitted_at: Optional[float] = None  # event time of its last row
    self.emitted_count = 0
    self.add(alert)

  def add(self, alert: dict[str, Any]) -> None:
    self.count += 1
    self.first_seen = min(self.first_seen, alert['t'])
    if alert['t'] >= self.last_seen:
      self.last_seen = alert['t']
      self.last_alert_id = alert['event_id']
    score = alert.get('score')
    score = float(score) if isinstance(score, (int, float)) else 0.0
    if score > self.max_score or not self.reasons and alert['reasons']:
      self.max_score = max(self.max_score, score)
      if alert['reasons']:
        self.reasons = alert['reasons']
    self.features.update({r.get('feature') for r in alert['reasons'] if isinstance(r, dict)})

  def row(self, status: str, at: float) -> dict[str, Any]:
    self.seq += 1
    self.emitted_at = at
    self.emitted_count = self.count
    first = self.first
    score = self.max_score if self.max_score != float('-inf') else 0.0
    return {
        'incident_id': self.incident_id,
        'update_seq': self.seq,
        'status': status,
        'kind': first.get('kind'),
        'group_key': self.key,
        'site': first.get('site'),
        'service': None if self.across_services else first.get('service'),
        'flag': first.get('flag'),
        'protocol_type': first.get('protocol_type'),
        'machine': first.get('machine'),
        'program': first.get('program'),
        'first_seen': _time(self.first_seen),
        'last_seen': _time(self.last_seen),
        'count': self.count,
        'max_score': score,
        'severity': severity(first.get('kind'), self.count, score),
        'top_features': to_json([{'feature': f, 'alerts': n} for f, n in sorted(
            self.features.items(), key=lambda fn: (-fn[1], str(fn[0])))[:TOP_FEATURES]
                                 if f is not None]).decode(),
        'reasons': to_json(self.reasons).decode(),
        'first_alert_id': first.get('event_id'),
        'last_alert_id': self.last_alert_id,
        'processing_time': utc_now(),
    }


class IncidentFn(beam.DoFn):
  """(group key, alert row) -> incident rows; see the module docstring.

  State per key: the alerts not yet evaluated, the open incident, and how far in event time
  the key was evaluated. One event-time timer: when the watermark passes the buffered alerts
  (or the open incident's quiet gap).
  """
  PENDING = userstate.BagStateSpec('pending', PickleCoder())
  OPEN = userstate.ReadModifyWriteStateSpec('open', PickleCoder())
  DONE_TO = userstate.ReadModifyWriteStateSpec('done_to', PickleCoder())
  FLUSH_AT = userstate.ReadModifyWriteStateSpec('flush_at', PickleCoder())
  FLUSH = userstate.TimerSpec('flush', TimeDomain.WATERMARK)

  def __init__(self, gap_s: float = DEFAULT_GAP_S, update_s: float = DEFAULT_UPDATE_S):
    # In microseconds, as alert times are kept.
    self._gap = int(round(float(gap_s) * 1e6))
    self._update = int(round(float(update_s) * 1e6))
    self._late = Metrics.counter('incidents', 'incident_late_alerts')
    self._opened = Metrics.counter('incidents', 'incidents_opened')

  def process(self, element, pending=beam.DoFn.StateParam(PENDING),
              flush=beam.DoFn.TimerParam(FLUSH), flush_at=beam.DoFn.StateParam(FLUSH_AT)):
    _, alert = element
    alert = compact_alert(alert)
    pending.add(alert)
    # One pending timer at a time (re-setting it with every alert would keep pushing it
    # ahead of the watermark under a steady flood).
    if flush_at.read() is None:
      flush.set(_timer_time(alert['t']))
      flush_at.write(alert['t'])

  @userstate.on_timer(FLUSH)
  def on_flush(self, key=beam.DoFn.KeyParam, timestamp=beam.DoFn.TimestampParam,
               pending=beam.DoFn.StateParam(PENDING), open_state=beam.DoFn.StateParam(OPEN),
               done_state=beam.DoFn.StateParam(DONE_TO), flush=beam.DoFn.TimerParam(FLUSH),
               flush_at=beam.DoFn.StateParam(FLUSH_AT)):
    now = timestamp.micros
    buffered = list(pending.read())
    ready = sorted((a for a in buffered if a['t'] <= now),
                   key=lambda a: (a['t'], str(a['event_id'])))
    waiting = [a for a in buffered if a['t'] > now]
    pending.clear()
    for alert in waiting:
      pending.add(alert)
    incident: Optional[Incident] = open_state.read()
    done_to = done_state.read()
    for alert in ready:
      if done_to is not None and alert['t'] < done_to and (
          incident is None or alert['t'] < incident.first_seen - self._gap):
        # Older than anything still open: its incident was closed already.
        self._late.inc()
        self._opened.inc()
        late = Incident(key, alert)
        yield late.row('open', alert['t'])
        yield late.row('closed', alert['t'])
        continue
      if incident is not None and alert['t'] - incident.last_seen > self._gap:
        yield incident.row('closed', incident.last_seen + self._gap)
        incident = None
      if incident is None:
        self._opened.inc()
        incident = Incident(key, alert)
        yield incident.row('open', alert['t'])
      else:
        incident.add(alert)
        if (alert['t'] - incident.emitted_at >= self._update and
            incident.count != incident.emitted_count):
          yield incident.row('updated', alert['t'])
      done_to = alert['t'] if done_to is None else max(done_to, alert['t'])
    done_to = now if done_to is None else max(done_to, now)
    if incident is not None and now > incident.last_seen + self._gap:
      yield incident.row('closed', incident.last_seen + self._gap)
      incident = None
    done_state.write(done_to)
    if incident is None:
      open_state.clear()
    else:
      open_state.write(incident)
    # Next: the newest alert waiting (those before it are taken at the same time), else the
    # end of the open incident's quiet gap.
    flush_at.clear()
    if waiting:
      when = max(a['t'] for a in waiting)
    elif incident is not None:
      when = incident.last_seen + self._gap + 1
    else:
      return
    flush.set(_timer_time(when))
    flush_at.write(when)


class GroupIncidents(beam.PTransform):
  """Alert rows (schemas.outputs.ALERT_SCHEMA) -> incident rows (INCIDENT_SCHEMA)."""

  def __init__(self, gap_s: float = DEFAULT_GAP_S, update_s: float = DEFAULT_UPDATE_S):
    super().__init__()
    self._gap_s = gap_s
    self._update_s = update_s

  def expand(self, alerts):
    return (alerts
            | 'KeyByGroup' >> beam.Map(lambda alert: (group_key(alert), alert))
            | 'GlobalWindow' >> beam.WindowInto(window.GlobalWindows())
            | 'Incidents' >> beam.ParDo(IncidentFn(self._gap_s, self._update_s)))


def incident_message(incident: dict[str, Any]) -> tuple[bytes, bytes]:
  """(Kafka key, value) of an incident row: keyed by incident id, so a compacted topic keeps
  each incident's newest state."""
  return incident['incident_id'].encode('utf-8'), to_json(incident)


class FormatIncidentMessages(beam.PTransform):
  """Incident rows -> (key, value) byte pairs for a Kafka sink."""

  def expand(self, incidents):
    return incidents | beam.Map(incident_message)
