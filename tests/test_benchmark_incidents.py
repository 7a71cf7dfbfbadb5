"""benchmarks/incidents.py's accounting, on a handful of records: what counts as covered (an
own alert, or an incident of the record's key spanning its time) and what does not (another
key, outside the span, a site-wide surge)."""

from __future__ import annotations

import datetime
import json

import pandas as pd

from benchmarks.incidents import MIN_FAMILY, RATE, START, coverage


def at(i):
  return START + datetime.timedelta(seconds=i / RATE)


def test_coverage_counts_own_alerts_and_incidents_of_the_same_key_only():
  n = 4 * MIN_FAMILY
  # Records 0..49 normal http, 50..99 smurf ecr_i, 100..149 neptune private S0,
  # 150..199 back http.
  frame = pd.DataFrame({
      'protocol_type': ['tcp'] * 50 + ['icmp'] * 50 + ['tcp'] * 100,
      'service': ['http'] * 50 + ['ecr_i'] * 50 + ['private'] * 50 + ['http'] * 50,
      'flag': ['SF'] * 100 + ['S0'] * 50 + ['SF'] * 50,
      'label': ['normal'] * 50 + ['smurf'] * 50 + ['neptune'] * 50 + ['back'] * 50})
  alerts = [{'kind': 'network_anomaly', 'details': json.dumps({'uuid': f'kdd-{i:06d}'})}
            for i in (3, 150, 151)]
  alerts.append({'kind': 'volume_anomaly', 'details': json.dumps({'window_s': 0.1})})

  def incident(kind, first, last, seq=0, **key):
    return {'incident_id': f'{kind}-{first}', 'update_seq': seq, 'kind': kind,
            'first_seen': at(first), 'last_seen': at(last), 'service': key.get('service'),
            'flag': key.get('flag'), 'protocol_type': key.get('protocol_type')}
  incidents = [
      # smurf 50..89 covered (last window ends 0.1 s = 10 records after record 79).
      incident('volume_anomaly', 50, 79, service='ecr_i', flag='SF', protocol_type='icmp'),
      # An older state of the same incident, shorter: the newest state counts.
      incident('volume_anomaly', 50, 60, seq=-1, service='ecr_i', flag='SF',
               protocol_type='icmp'),
      # A site-wide surge over everything: covers nothing.
      incident('volume_anomaly', 0, n, service=None),
      # back's own alerts 150, 151 grouped; the incident spans 150..174.
      incident('network_anomaly', 150, 174, service='http', flag='SF'),
      # Another key's incident over neptune's time: not neptune's.
      incident('network_anomaly', 100, 149, service='private', flag='REJ'),
  ]
  families = coverage(frame, alerts, incidents)['families']
  assert families['smurf']['covered'] == 40 / 50
  assert families['back']['covered'] == 25 / 50 and families['back']['alerted'] == 2 / 50
  assert families['neptune']['covered'] == 0.0
  assert families['normal']['alerted'] == 1 / 50 and families['normal']['covered'] == 1 / 50
