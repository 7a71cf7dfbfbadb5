"""Helpers shared by several test modules (no test module imports another): reading the
job's Parquet outputs, small published models, the dashboard's sample alerts, outputs and
registry, and a dashboard server on a free port."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import random
import re
import threading
from typing import Any, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from dashboard.server import Dashboard, DashboardServer
from generator.synthetic_host import generate_host
from generator.synthetic_network import generate_network
from harness import scripts
from model import registry, signing
from model.detector import fit_supervised
from model.features import frame_from_records
from schemas.layout import finished_files, output_folder
from schemas.outputs import ATTACK_SCHEMA, DEAD_LETTER_SCHEMA, INCIDENT_SCHEMA
from schemas.records import MEMORY, NETWORK, PROCESS, SCHEMAS
from tests.factories import BASE_TS, memory_record, network_record, process_record
from transforms.alerts import alert_message, host_attack_alert, network_alert
from transforms.cleaning import clean_record
from transforms.parse import decode_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MALICIOUS = '<img src=x onerror=alert(1)><script>window.__pwned=1;alert(2)</script>'
UTC = datetime.timezone.utc
SERVICES = ('http', 'ecr_i', 'private', 'smtp', 'ftp_data', 'telnet', 'domain_u')
PROGRAMS = ('cryptominer', 'sshd', 'python3', 'nc', 'bash', 'java', 'xmrig')
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def require_jvm_side() -> None:
  """Skips the test, with the reason, when java or a jar the JVM side needs is missing."""
  reason = scripts.missing_jvm_side()
  if reason:
    pytest.skip(reason)


# ---------- the job's outputs ----------

def read_output(root: str, folder: str) -> list[dict]:
  """Every row of the finished Parquet files under ``root``/``folder`` (hive partitions)."""
  path = output_folder(root, folder)
  files = [m.path for m in finished_files(path)]
  if not files:
    return []
  dataset = ds.dataset(files, format='parquet', partitioning='hive', partition_base_dir=path,
                       exclude_invalid_files=True)
  return dataset.to_table().to_pylist()


def host_records(value: bytes) -> list:
  """The records of a host message as the job's own strict decoder sees them."""
  try:
    decoded = decode_json(value)
  except (ValueError, RecursionError):
    return []
  return decoded if isinstance(decoded, list) else []


# ---------- models ----------

def _training_set(schema, raw_records, labels):
  cleaned = [clean_record(schema, r) for r in raw_records]
  return frame_from_records(schema, cleaned), labels


def train_factory_models(model_dir: str) -> dict[str, str]:
  """Publishes one small model per detector; returns {detector: version}."""
  labels = [i % 4 == 0 for i in range(400)]
  sets = {
      'network': _training_set(
          NETWORK, [network_record(i, attack=a) for i, a in enumerate(labels)], labels),
      'process': _training_set(
          PROCESS, [process_record(i % 7, 100 + i, f'cmd{i % 5}', BASE_TS + i, a)
                    for i, a in enumerate(labels)], labels),
      'memory': _training_set(
          MEMORY, [memory_record(i % 7, 100 + i, f'cmd{i % 5}', BASE_TS + i, a)
                   for i, a in enumerate(labels)], labels),
  }
  return _publish_supervised(model_dir, sets, max_iter=20)


def _publish_supervised(model_dir: str, sets, max_iter: int) -> dict[str, str]:
  """{detector: (raw frame, labels)} -> one published supervised model each."""
  versions = {}
  for detector, (frame, labels) in sets.items():
    schema = SCHEMAS[detector]
    model = fit_supervised(schema, frame[list(schema.feature_columns)], labels,
                           max_iter=max_iter)
    versions[detector] = registry.publish(
        model_dir, detector, model, feature_columns=list(schema.feature_columns),
        training_rows=len(frame))
  return versions


def train_synthetic_models(model_dir: str, seed: int = 0) -> dict[str, str]:
  """Small supervised models on the generator's synthetic traffic: they flag the generator's
  attacks as a real model would, so end-to-end tests see alerts and joined attack events."""
  process, memory = generate_host(8, 600, seed=seed, start_ts=BASE_TS, attack_fraction=0.2)
  network = generate_network(5000, seed=seed)
  frames = {
      'network': (network, network['label'] != 'normal'),
      'process': (pd.DataFrame(process), pd.DataFrame(process)['attack'] == 1),
      'memory': (pd.DataFrame(memory), pd.DataFrame(memory)['attack'] == 1),
  }
  return _publish_supervised(model_dir, frames, max_iter=40)


# ---------- the dashboard ----------

def read_dashboard_port(proc, lines: list, host: str = '127.0.0.1',
                        max_lines: int = 30) -> Optional[int]:
  """Reads the dashboard CLI's output (``proc.stdout``) into ``lines`` up to its line
  ``Alerts dashboard: http://<host>:<port>/``; returns the port, None after ``max_lines``."""
  pattern = re.compile(rf'Alerts dashboard: http://{re.escape(host)}:(\d+)/')
  while len(lines) < max_lines:
    lines.append(proc.stdout.readline())
    match = pattern.match(lines[-1])
    if match:
      return int(match.group(1))
  return None


def stop_dashboard(proc, lines: list) -> str:
  """Stops the dashboard CLI (SIGTERM, as an operator would); returns all it printed, with the
  ``lines`` already read."""
  proc.terminate()
  proc.wait(timeout=30)
  lines.append(proc.stdout.read())
  return ''.join(lines)


def dt_utc(t: float) -> datetime.datetime:
  return datetime.datetime.fromtimestamp(t, UTC)


def sample_network_alert(i: int, when: float, score: float, **overrides) -> dict[str, Any]:
  """An alert row exactly as the stream job makes it (transforms.alerts.network_alert)."""
  rng = random.Random(i)
  record = {'uuid': f'net-{when:.0f}-{i}', 'event_time': dt_utc(when - rng.uniform(0, 3)),
            'site': rng.choice(('site-1', 'site-2')), 'score': score,
            'model_version': '20261123T190000000000Z',
            'service': rng.choice(SERVICES), 'protocol_type': rng.choice(('tcp', 'udp', 'icmp')),
            'duration': 0, 'flag': 'SF', 'src_bytes': rng.randint(0, 5000),
            'dst_bytes': rng.randint(0, 5000), 'count': rng.randint(1, 511),
            'srv_count': rng.randint(1, 511), 'label': 'smurf.'}
  record['reasons'] = [
      {'feature': 'src_bytes', 'value': record['src_bytes'], 'normal_low': 0.0,
       'normal_high': 1032.0, 'normal': '0 - 1,032', 'deviation': 2.5},
      {'feature': 'service', 'value': record['service'], 'normal_low': None,
       'normal_high': None, 'normal': "usually 'http' (61%)", 'deviation': 1.2}]
  alert = network_alert(record)
  alert['processing_time'] = dt_utc(when)
  alert.update(overrides)
  return alert


def sample_attack_row(i: int, when: float, machine: int, program: str) -> dict[str, Any]:
  """An attacks/ row (ATTACK_SCHEMA fields that matter; the rest null)."""
  rng = random.Random(1000 + i)
  pid = 4000 + i
  return {
      'event_id': f'attack-{when:.0f}-{i}', 'processing_time': dt_utc(when),
      'Process_event_time': dt_utc(when - 5), 'Memory_event_time': dt_utc(when - 3),
      'Process_machine': machine, 'Memory_machine': machine,
      'Process_CMD': program, 'Process_PID': pid, 'Process_CMD_PID': f'{program}_{pid}',
      'Memory_CMD': program, 'Memory_PID': pid, 'Memory_CMD_PID': f'{program}_{pid}',
      'Process_score': rng.uniform(0.86, 0.999), 'Memory_score': rng.uniform(0.86, 0.999),
      'Process_CPU': rng.uniform(60, 99), 'Memory_MEM': rng.uniform(10, 45),
      'Process_site': 'site-1', 'Process_model_version': '20261123T190500000000Z',
      'Memory_model_version': '20261123T190600000000Z', 'delta_time': rng.uniform(-25, 25),
  }


def sample_alerts(now: float, count: int = 300, minutes: int = 45,
                  seed: int = 7) -> list[dict[str, Any]]:
  """A realistic mix over the last ``minutes``: network anomalies (most), host attacks, a
  burst a few minutes ago. Alert rows as the stream job publishes them."""
  rng = random.Random(seed)
  alerts = []
  for i in range(count):
    age = rng.uniform(0, minutes * 60) if i % 4 else rng.uniform(4 * 60, 7 * 60)  # a burst
    when = now - age
    if i % 9 == 0:
      attack = sample_attack_row(i, when, rng.choice((3, 7, 7, 12, 15)), rng.choice(PROGRAMS))
      alerts.append(host_attack_alert(attack))
    else:
      score = min(0.999, max(0.5, rng.betavariate(5, 1.3)))
      alerts.append(sample_network_alert(i, when, score))
  return sorted(alerts, key=lambda a: a['processing_time'])


def kafka_message(alert: dict[str, Any]) -> tuple[bytes, bytes]:
  return alert_message(alert)


def write_sample_outputs(output: str, now: float, attacks: int = 14,
                         dead_letters: int = 9) -> None:
  """attacks/ and dead_letter/ Parquet files like the stream job's, under ``output``."""
  rng = random.Random(3)
  date = dt_utc(now).strftime('%Y-%m-%d')
  attack_rows = [sample_attack_row(i, now - rng.uniform(30, 50 * 60), rng.choice((3, 7, 12)),
                                   rng.choice(PROGRAMS)) for i in range(attacks)]
  dead_rows = []
  for i in range(dead_letters):
    stream = rng.choice(('network', 'process', 'memory'))
    dead_rows.append({
        'stream': stream, 'source': {'network': 'sensor_messages', 'process': 'process_activity',
                                     'memory': 'memory_activity'}[stream],
        'partition': rng.randint(0, 3), 'offset': rng.randint(0, 10_000), 'record_index': None,
        'stage': rng.choice(('parse', 'clean', 'enrich')),
        'error': rng.choice(('JSONDecodeError: Expecting value: line 1 column 1',
                             "field 'CPU': cannot parse '12%%x' as a number",
                             "missing required field 'ts'")),
        'payload': b'{"machine": "7", "CPU": "12%%x"', 'failed_at': dt_utc(now - rng.uniform(0, 40 * 60))})
  for folder, rows, schema in (('attacks', attack_rows, ATTACK_SCHEMA),
                               ('dead_letter', dead_rows, DEAD_LETTER_SCHEMA),
                               ('incidents', sample_incident_rows(now), INCIDENT_SCHEMA)):
    path = os.path.join(output, folder, f'dt={date}')
    os.makedirs(path, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema),
                   os.path.join(path, f'local-test-{int(now)}-000000-000.parquet'))


def sample_incident_rows(now: float) -> list[dict[str, Any]]:
  """incidents/ rows as transforms/incidents.py writes them: a volume flood still open (its
  opening and an update), a closed network incident, and an open one whose reason's feature is
  an injection attempt."""
  def row(incident_id, seq, status, kind, count, first, last, reasons, **fields):
    return {'incident_id': incident_id, 'update_seq': seq, 'status': status, 'kind': kind,
            'group_key': f'{kind}|site-1', 'site': 'site-1', 'first_seen': dt_utc(first),
            'last_seen': dt_utc(last), 'count': count, 'max_score': 0.97,
            'severity': 'high' if count >= 100 else 'medium',
            'top_features': json.dumps([{'feature': r['feature'], 'alerts': count}
                                        for r in reasons]),
            'reasons': json.dumps(reasons), 'first_alert_id': f'{incident_id}-first',
            'last_alert_id': f'{incident_id}-last', 'processing_time': dt_utc(last), **fields}
  surge = [{'feature': 'connections per 10 s', 'value': 980, 'normal_low': 0.0,
            'normal_high': 12.0, 'normal': 'usually 3 (up to 12) per 10 s', 'deviation': 81.7}]
  bytes_ = [{'feature': 'src_bytes', 'value': 54540, 'normal_low': 0.0, 'normal_high': 1032.0,
             'normal': '0 - 1,032', 'deviation': 3.9}]
  evil = [{'feature': MALICIOUS, 'value': MALICIOUS, 'normal': MALICIOUS, 'deviation': 1.0}]
  volume = dict(service='ecr_i', flag='SF', protocol_type='icmp')
  return [
      row('inc-volume', 0, 'open', 'volume_anomaly', 1, now - 600, now - 600, surge, **volume),
      row('inc-volume', 1, 'updated', 'volume_anomaly', 57, now - 600, now - 30, surge,
          **volume),
      row('inc-back', 2, 'closed', 'network_anomaly', 240, now - 1800, now - 1500, bytes_,
          service='http', flag='SF', protocol_type='tcp'),
      row('inc-evil', 0, 'open', 'network_anomaly', 3, now - 120, now - 60, evil,
          service='telnet', flag='RSTO', protocol_type='tcp'),
  ]


def write_sample_registry(model_dir: str) -> dict[str, str]:
  """A manifest per detector, as model.registry.publish writes them, signed with the test
  session's key (tests/conftest.py); no model file is needed to read a manifest."""
  key = signing.SigningKey.load()
  versions = {'network': '20261123T190000000000Z', 'process': '20261123T190500000000Z',
              'memory': '20261123T193000000000Z'}
  for detector, version in versions.items():
    path = os.path.join(model_dir, detector, version)
    os.makedirs(path, exist_ok=True)
    manifest = json.dumps({
        'detector': detector, 'version': version, 'created': '2026-11-23T19:00:00+00:00',
        'model_file': registry.MODEL_FILE, 'format': 'skops', 'sha256': '0' * 64,
        'size_bytes': 0, 'training_rows': 48_210, 'threshold': 0.61,
        'metrics': {'roc_auc': 0.991, 'pr_auc': 0.962, 'f1': 0.93, 'recall': 0.95,
                    'precision': 0.91}}).encode('utf-8')
    with open(os.path.join(path, registry.MANIFEST_FILE), 'wb') as f:
      f.write(manifest)
    with open(os.path.join(path, registry.SIGNATURE_FILE), 'wb') as f:
      f.write(key.sign(manifest))
  return versions


def deep_json(depth: int) -> str:
  return '[' * depth + ']' * depth


def forged_values(now: float) -> dict[str, list]:
  """Hostile values per field, as JSON would carry them."""
  huge = [1e308, -1e308, 2 ** 80, -(2 ** 80), 10 ** 400, -1, 'NaN', 'Infinity', '1e999',
          '-0', '9' * 5000]
  times = [None, 0, -1, 1e308, 2 ** 80, 10 ** 400, '9999-12-31T23:59:59Z',
           '0001-01-01T00:00:00Z', '0001-01-01T00:00:00+14:00', '9999-12-31T23:59:59-14:00',
           '1970-01-01T00:00:00Z', 'now', '2026-13-45T99:99:99', 'x' * 1_000_000,
           [now], {'t': now}, True, now + 86400 * 365, now - 86400 * 365]
  wrong_types = [[1, 2, 3], {'a': {'b': 'c'}}, True, None, '', 'x' * 1_000_000,
                 '\ud800\udfff\x00\u202e', MALICIOUS, list(range(10_000))]
  return {'score': huge + wrong_types, 'machine': huge + wrong_types,
          'processing_time': times, 'event_time': times,
          'program': wrong_types + huge, 'service': wrong_types + huge,
          'site': wrong_types, 'model_version': wrong_types, 'protocol_type': wrong_types,
          'kind': wrong_types + ['unknown_kind', 'host_attack', '__proto__', 'constructor'],
          'event_id': wrong_types + ['same-id'],
          'details': wrong_types + [json.loads(deep_json(30))]}


def forged_alerts(now: float):
  """A real alert with one field replaced by each hostile value, then whole-message forgeries."""
  base = json.loads(kafka_message(sample_network_alert(1, now, 0.9))[1])
  for field, values in forged_values(now).items():
    for value in values:
      alert = dict(base, **{field: value})
      yield alert
  for missing in ('kind', 'processing_time', 'event_id', 'score', 'details'):
    yield {k: v for k, v in base.items() if k != missing}
  yield from ([], 'text', 42, None, {}, {'kind': None})


class Served:
  """A dashboard served on a free loopback port in a thread, with a plain HTTP client."""

  def __init__(self, dashboard: Dashboard, host: str = '127.0.0.1', **kwargs):
    self.server = DashboardServer((host, 0), dashboard, **kwargs)
    self.port = self.server.server_address[1]
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()

  def request(self, method: str, path: str, host: Optional[str] = None):
    conn = http.client.HTTPConnection('127.0.0.1', self.port, timeout=5)
    headers = {'Host': host} if host else {}
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body

  def close(self):
    self.server.shutdown()
    self.server.server_close()
