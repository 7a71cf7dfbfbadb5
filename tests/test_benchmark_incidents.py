"""benchmarks/incidents.py's accounting, on a handful of records: what counts as covered (an
own alert, or an incident of the record's key spanning its time) and what does not (another
key, outside the span, a site-wide surge)."""

from __future__ import annotations

import datetime
import json

import pandas as pd

from benchmarks.incidents import MIN_FAMILY, RATE, START, coverage
from transforms.volume import size_class


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


def test_coverage_of_a_surge_across_services_and_of_one_size_class():
  # 0..49 normal tcp http SF of 300 bytes, 50..99 nmap probes tcp SH over many services,
  # 100..199 back: http SF requests of 54,540 bytes among normal ones (even records).
  frame = pd.DataFrame({
      'protocol_type': ['tcp'] * 200,
      'service': ['http'] * 50 + [f'svc{i % 7}' for i in range(50)] + ['http'] * 100,
      'flag': ['SF'] * 50 + ['SH'] * 50 + ['SF'] * 100,
      'src_bytes': [300] * 100 + [54540 if i % 2 == 0 else 300 for i in range(100)],
      'label': ['normal'] * 50 + ['nmap'] * 50 + ['back' if i % 2 == 0 else 'normal'
                                                  for i in range(100)]})
  alerts = [{'kind': 'volume_anomaly', 'details': json.dumps({'window_s': 0.1})}]
  size = size_class(54540)
  incidents = [
      # tcp/*/SH: every service's SH records in its span.
      {'incident_id': 'spread', 'update_seq': 0, 'kind': 'volume_anomaly',
       'first_seen': at(50), 'last_seen': at(89), 'service': None, 'flag': 'SH',
       'protocol_type': 'tcp', 'group_key': 'volume_anomaly|kdd|tcp|*|SH'},
      # tcp/http/SF/<size>: only the http SF records of that size class.
      {'incident_id': 'size', 'update_seq': 0, 'kind': 'volume_anomaly',
       'first_seen': at(0), 'last_seen': at(189), 'service': 'http', 'flag': 'SF',
       'protocol_type': 'tcp', 'group_key': f'volume_anomaly|kdd|tcp|http|SF|size {size}'},
  ]
  families = coverage(frame, alerts, incidents)['families']
  assert families['nmap']['covered'] == 1.0  # 50..89 and the last window's 10 records
  assert families['back']['covered'] == 1.0
  assert families['normal']['covered'] == 0.0  # 300-byte http records are another class


def test_a_network_incident_across_services_covers_its_flag_only():
  # 0..99 neptune S0 over many services, 100..199 normal SF of the same services.
  frame = pd.DataFrame({
      'protocol_type': ['tcp'] * 200, 'service': [f'svc{i % 9}' for i in range(200)],
      'flag': ['S0'] * 100 + ['SF'] * 100, 'src_bytes': [0] * 200,
      'label': ['neptune'] * 100 + ['normal'] * 100})
  alerts = [{'kind': 'network_anomaly', 'details': json.dumps({'uuid': f'kdd-{i:06d}'})}
            for i in (0, 99)]
  incidents = [{'incident_id': 'syn', 'update_seq': 0, 'kind': 'network_anomaly',
                'first_seen': at(0), 'last_seen': at(199), 'service': None, 'flag': 'S0',
                'protocol_type': 'tcp', 'group_key': 'network_anomaly|kdd|*|S0'}]
  families = coverage(frame, alerts, incidents)['families']
  assert families['neptune']['covered'] == 1.0 and families['neptune']['alerted'] == 0.02
  assert families['normal']['covered'] == 0.0
