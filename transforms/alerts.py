"""Alerts: what a security analyst reads. One row per network anomaly, volume anomaly
(transforms/volume.py) or host attack event, written to ``alerts/`` and published to the Kafka
topic ``alerts`` as JSON.

Each says why in ``reasons`` (JSON): the features of the record furthest from the model's
normal profile, with the record's value and the normal range (model/profile.py, computed when
the batch is scored: transforms/inference.py), or for a volume anomaly its count against the
recent baseline. A model published without a profile gives alerts without reasons (null).

Alert ids are deterministic (uuid5 of the record ids that caused them, transforms/ids.py), so
a replay after a restart re-sends the same ids and consumers can drop repeats, and two
different records never share one, whatever uuid their producer gave them.
"""

from __future__ import annotations

from typing import Any, Optional

import apache_beam as beam
import orjson

from transforms.dead_letter import utc_now
from transforms.ids import network_alert_id

# Enough of the record to triage without opening the archive.
_NETWORK_DETAILS = ('uuid', 'duration', 'protocol_type', 'service', 'flag', 'src_bytes',
                    'dst_bytes', 'count', 'srv_count', 'serror_rate', 'rerror_rate',
                    'same_srv_rate', 'dst_host_count', 'dst_host_srv_count', 'label')
_HOST_DETAILS = ('uuid', 'CMD', 'PID', 'ts', 'CPU', 'PRI', 'State', 'MEM', 'VSIZE', 'RSIZE',
                 'MINFLT', 'MAJFLT', 'attack', 'score')


def to_json(value: Any) -> bytes:
  """Compact JSON with sorted keys; datetimes as ISO-8601 (orjson: every flagged record of a
  busy stream becomes an alert, and the standard library's encoder was a tenth of its cost)."""
  return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)


def network_alert(record: dict[str, Any]) -> dict[str, Any]:
  """A scored network record predicted anomalous -> an alert row."""
  return {
      'event_id': network_alert_id(record),
      'kind': 'network_anomaly',
      'event_time': record['event_time'],
      'processing_time': utc_now(),
      'site': record.get('site'),
      'score': record['score'],
      'model_version': record['model_version'],
      'machine': None,
      'program': None,
      'service': record.get('service'),
      'protocol_type': record.get('protocol_type'),
      'flag': record.get('flag'),
      'details': to_json({k: record.get(k) for k in _NETWORK_DETAILS}).decode(),
      'reasons': reasons_json(record.get('reasons')),
  }


def reasons_json(reasons: Optional[list]) -> Optional[str]:
  """A record's reasons (a list of dicts, or None without a profile) as the alert's column."""
  return None if reasons is None else to_json(reasons).decode()


def host_reasons(attack: dict[str, Any]) -> Optional[list]:
  """The reasons of both records of a host attack, each feature named with its stream, the
  furthest from normal first; None when neither record has any (models without profiles)."""
  merged = []
  for prefix, stream in (('Process_', 'process'), ('Memory_', 'memory')):
    for reason in attack.get(f'{prefix}reasons') or ():
      merged.append({**reason, 'feature': f"{stream}.{reason['feature']}"})
  if not merged and attack.get('Process_reasons') is None and attack.get(
      'Memory_reasons') is None:
    return None
  return sorted(merged, key=lambda r: -(r.get('deviation') or 0.0))


def host_attack_alert(attack: dict[str, Any]) -> dict[str, Any]:
  """An ``attacks/`` row -> an alert row. Its score is the weaker of the two detectors'."""
  details = {'process': {k: attack.get(f'Process_{k}') for k in _HOST_DETAILS},
             'memory': {k: attack.get(f'Memory_{k}') for k in _HOST_DETAILS},
             'delta_time': attack['delta_time']}
  return {
      'event_id': attack['event_id'],
      'kind': 'host_attack',
      'event_time': min(attack['Process_event_time'], attack['Memory_event_time']),
      'processing_time': attack['processing_time'],
      'site': attack.get('Process_site'),
      'score': min(attack['Process_score'], attack['Memory_score']),
      'model_version': (f"process:{attack['Process_model_version']},"
                        f"memory:{attack['Memory_model_version']}"),
      'machine': attack['Process_machine'],
      'program': attack['Process_CMD_PID'],
      'service': None,
      'protocol_type': None,
      'flag': None,
      'details': to_json(details).decode(),
      'reasons': reasons_json(host_reasons(attack)),
  }


def alert_message(alert: dict[str, Any]) -> tuple[bytes, bytes]:
  """(Kafka key, value): keyed by event id so a topic compaction keeps one copy."""
  return (alert['event_id'].encode('utf-8'),
          to_json(alert))


class FormatAlertMessages(beam.PTransform):
  """Alert rows -> (key, value) byte pairs for a Kafka sink."""

  def expand(self, alerts):
    return alerts | beam.Map(alert_message)
