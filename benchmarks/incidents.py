"""Benchmark (not a test): alerts against incidents on the real KDD Cup 1999 10% file, and how
much of each attack family an analyst is shown.

    python -m benchmarks.incidents                          # the whole file, DirectRunner
    python -m benchmarks.incidents --limit 50000            # its first 50,000 records
    python -m benchmarks.incidents --model_dir models-kdd   # reuse a published model

Steps:

1. The file's records with their label replaced by ``normal.`` (what the detectors may learn
   from: nothing) go to ``python -m pipelines.retrain --detector network`` with default
   settings, which publishes a label-free model and its normal profile (skipped when
   ``--model_dir`` already holds a network model); the host detectors get the bootstrap's
   first models (no host records are sent).
2. The records, in file order, become ``network.jsonl`` (no label; uuid ``kdd-<line>``) with
   event times 10 ms apart (100 connections per second of event time: the 494,021 records span
   about 82 minutes), and the stream job runs over it as a bounded job
   (``python -m pipelines.stream --source=files``, DirectRunner unless ``-- --runner=...``).
3. From alerts/ and incidents/ it counts alerts by kind and incidents, and per label with at
   least 50 records the share of records *covered*: the record has its own alert, or an
   incident of its key (network_anomaly: its service and flag, or its flag alone for an
   incident across services, every flag but SF; volume_anomaly: its
   protocol/service/flag, its protocol and flag for a surge across services, and only its
   src_bytes size class for a size key's surge) spans its event time (volume: from its first
   window's start to its last window's end). Site-wide volume incidents ("all traffic surges") cover nothing here:
   they say when, not what. Normal records alerted: those with an alert of their own.

Results: benchmarks/results/incidents.json and incidents.png (per-family coverage).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import sys
import time
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks.common import log, machine_info, pyplot, write_json
from model import registry
from pipelines import retrain, stream as stream_job
from pipelines.bootstrap import bootstrap
from schemas.kdd import read_kdd_csv
from schemas.layout import finished_files, output_folder
from schemas.records import KDD_FEATURES
from transforms.volume import size_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, '..', 'shared', 'data', 'kddcup.data_10_percent.gz')
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
RATE = 100.0  # connections per second of event time
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
MIN_FAMILY = 50
GOALS = {'coverage': 0.90, 'incidents': 500, 'normal_alerted': 0.01}


def read_output(root: str, folder: str) -> list[dict]:
  """Every row of the finished Parquet files of one output folder."""
  files = [m.path for m in finished_files(output_folder(root, folder))]
  if not files:
    return []
  return pq.ParquetDataset(files).read().to_pylist()


def write_inputs(frame: pd.DataFrame, work: str) -> tuple[str, str]:
  """(label-free CSV for the retrain, folder holding network.jsonl for the stream job)."""
  csv = os.path.join(work, 'kdd_unlabelled.csv')
  unlabelled = frame[list(KDD_FEATURES)].copy()
  unlabelled['label'] = 'normal.'
  unlabelled.to_csv(csv, header=False, index=False)
  inputs = os.path.join(work, 'stream_in')
  os.makedirs(inputs, exist_ok=True)
  path = os.path.join(inputs, 'network.jsonl')
  if os.path.exists(path) and os.path.exists(csv):
    with open(path, 'rb') as f:
      if sum(1 for _ in f) == len(frame):
        return csv, inputs  # written by an earlier run over the same records
  records = frame[list(KDD_FEATURES)].to_dict('records')
  with open(path, 'w', encoding='utf-8') as f:
    for i, record in enumerate(records):
      when = START + datetime.timedelta(microseconds=round(i * 1e6 / RATE))
      record.update(uuid=f'kdd-{i:06d}', utc=when.strftime('%Y-%m-%dT%H:%M:%S.%fZ'),
                    sequence_id=i, index=i, site='kdd')
      f.write(json.dumps(record) + '\n')
  return csv, inputs


def ensure_model(csv: str, model_dir: str) -> str:
  if registry.list_versions(model_dir, 'network'):
    log(f'reusing the network model in {model_dir}')
  else:
    log(f'retraining from {csv} (no labels) into {model_dir}')
    retrain.run(['--detector', 'network', '--input', csv, '--model_dir', model_dir])
  # The job scores every stream: first host models (none of their records are sent).
  bootstrap(model_dir)
  return registry.list_versions(model_dir, 'network')[-1]


def coverage(frame: pd.DataFrame, alerts: list[dict], incidents: list[dict]
             ) -> dict[str, Any]:
  """Per-label coverage and the normal alert rate (see the module docstring)."""
  n = len(frame)
  times = np.arange(n) / RATE  # seconds since START, in file order
  alerted = np.zeros(n, dtype=bool)
  for alert in alerts:
    if alert['kind'] == 'network_anomaly':
      uuid = json.loads(alert['details']).get('uuid') or ''
      if uuid.startswith('kdd-'):
        alerted[int(uuid[4:])] = True
  covered = alerted.copy()
  latest: dict[str, dict] = {}
  for row in incidents:
    seen = latest.get(row['incident_id'])
    if seen is None or row['update_seq'] > seen['update_seq']:
      latest[row['incident_id']] = row
  by_key = collections.defaultdict(list)
  for i, key in enumerate(zip(frame['protocol_type'], frame['service'], frame['flag'])):
    by_key[key].append(i)
  by_key = {k: np.array(v) for k, v in by_key.items()}
  by_service_flag = collections.defaultdict(list)
  for (protocol, service, flag), rows in by_key.items():
    by_service_flag[(service, flag)].append(rows)
  by_service_flag = {k: np.sort(np.concatenate(v)) for k, v in by_service_flag.items()}
  by_protocol_flag = collections.defaultdict(list)
  for (protocol, service, flag), rows in by_key.items():
    by_protocol_flag[(protocol, flag)].append(rows)
  by_protocol_flag = {k: np.sort(np.concatenate(v)) for k, v in by_protocol_flag.items()}
  by_flag = collections.defaultdict(list)
  for (protocol, service, flag), rows in by_key.items():
    by_flag[flag].append(rows)
  by_flag = {k: np.sort(np.concatenate(v)) for k, v in by_flag.items()}
  src_bytes = frame['src_bytes'] if 'src_bytes' in frame else [None] * n
  sizes = np.array([-1 if s is None else s for s in map(size_class, src_bytes)])
  window_s = 0.0
  for incident in latest.values():
    first = (incident['first_seen'] - START).total_seconds()
    last = (incident['last_seen'] - START).total_seconds()
    if incident['kind'] == 'volume_anomaly':
      if incident['protocol_type'] is None:
        continue  # site-wide
      if incident['service'] is None:  # one protocol and flag across services (a scan)
        rows = by_protocol_flag.get((incident['protocol_type'], incident['flag']))
      else:
        rows = by_key.get((incident['protocol_type'], incident['service'], incident['flag']))
      size = _size_of(incident.get('group_key'))
      if rows is not None and size is not None:  # one size class of the key's requests
        rows = rows[sizes[rows] == size]
      window_s = window_s or _window_s(alerts)
      last += window_s
    elif incident['kind'] == 'network_anomaly':
      if incident['service'] is None:  # one flag (not SF) across services
        rows = by_flag.get(incident['flag'])
      else:
        rows = by_service_flag.get((incident['service'], incident['flag']))
    else:
      continue
    if rows is None:
      continue
    t = times[rows]
    lo, hi = np.searchsorted(t, first, 'left'), np.searchsorted(t, last, 'right')
    covered[rows[lo:hi]] = True
  labels = frame['label'].to_numpy()
  families = {}
  for label, count in collections.Counter(labels).most_common():
    if count < MIN_FAMILY:
      continue
    mask = labels == label
    families[label] = {'records': int(count), 'covered': float(covered[mask].mean()),
                       'alerted': float(alerted[mask].mean())}
  return {'families': families, 'latest': latest, 'covered': covered}


def _size_of(group_key: str) -> Optional[int]:
  """The src_bytes size class of a size key's volume incident ('...|size 31'), else None."""
  last = (group_key or '').rsplit('|', 1)[-1]
  return int(last[5:]) if last.startswith('size ') else None


def _window_s(alerts: list[dict]) -> float:
  for alert in alerts:
    if alert['kind'] == 'volume_anomaly':
      return float(json.loads(alert['details'])['window_s'])
  return 0.0


def plot(result: dict, path: str) -> None:
  plt = pyplot()
  families = {k: v for k, v in result['families'].items() if k != 'normal'}
  names = list(families)
  fig, ax = plt.subplots(figsize=(9, 4))
  ax.bar(names, [families[n]['covered'] for n in names], label='covered (alert or incident)')
  ax.bar(names, [families[n]['alerted'] for n in names], width=0.4,
         label='own per-record alert')
  ax.axhline(GOALS['coverage'], color='red', linestyle='--', label='goal 90%')
  ax.set_ylim(0, 1.05)
  ax.set_ylabel('share of the family\'s records')
  ax.set_title(f"KDD 10%: {result['alerts']:,} alerts -> {result['incidents']:,} incidents; "
               f"normal alerted {result['normal_alerted']:.2%}")
  plt.setp(ax.get_xticklabels(), rotation=30, ha='right')
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.incidents',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', default=os.path.abspath(DATA),
                      help='the KDD Cup 1999 10%% file (default: ../shared/data/...)')
  parser.add_argument('--work', default=os.path.join('.cache', 'bench-incidents'))
  parser.add_argument('--model_dir', default=None,
                      help='a registry with a network model to use (default: a fresh one '
                      'under --work, published by the retrain from the same traffic)')
  parser.add_argument('--limit', type=int, default=None, help='only the first N records')
  parser.add_argument('--results_dir', default=RESULTS)
  args, job_flags = parser.parse_known_args(argv)
  job_flags = [f for f in job_flags if f != '--']
  if not os.path.exists(args.data):
    sys.exit(f'{args.data} not found: the benchmark needs the real KDD Cup 1999 10% file')
  os.makedirs(args.work, exist_ok=True)
  frame = read_kdd_csv(args.data)
  if args.limit:
    frame = frame.iloc[:args.limit].reset_index(drop=True)
  log(f'{len(frame):,} records from {args.data}')
  csv, inputs = write_inputs(frame, args.work)
  model_dir = args.model_dir or os.path.join(args.work, 'models')
  t0 = time.time()
  version = ensure_model(csv, model_dir)
  retrain_s = time.time() - t0
  output = os.path.join(args.work, f'out-{int(time.time())}')
  t0 = time.time()
  stream_job.run(['--source=files', f'--input_dir={inputs}', f'--output={output}',
                  f'--model_dir={model_dir}', '--max_event_age_s=0', '--max_event_lead_s=0',
                  '--site=kdd', *job_flags])
  stream_s = time.time() - t0
  alerts = read_output(output, 'alerts')
  incidents = read_output(output, 'incidents')
  dead = read_output(output, 'dead_letter')
  cov = coverage(frame, alerts, incidents)
  latest = cov.pop('latest')
  cov.pop('covered')
  families = cov['families']
  normal = families.get('normal', {'alerted': 0.0, 'covered': 0.0})
  attacks = {k: v for k, v in families.items() if k != 'normal'}
  result = {
      'records': len(frame), 'model_version': version, 'model_dir': model_dir,
      'alerts': len(alerts),
      'alerts_by_kind': dict(collections.Counter(a['kind'] for a in alerts)),
      'incidents': len(latest),
      'incidents_by_kind': dict(collections.Counter(i['kind'] for i in latest.values())),
      'incident_rows': len(incidents), 'dead_letters': len(dead),
      'normal_alerted': normal['alerted'], 'normal_covered': normal['covered'],
      'families': families,
      'goals': GOALS,
      'goals_met': {
          'coverage': all(v['covered'] >= GOALS['coverage'] for v in attacks.values()),
          'incidents': len(latest) < GOALS['incidents'],
          'normal_alerted': normal['alerted'] <= GOALS['normal_alerted']},
      'retrain_s': round(retrain_s, 1), 'stream_s': round(stream_s, 1),
      'job_flags': job_flags, 'machine': machine_info(),
  }
  suffix = f'_{args.limit}' if args.limit else ''
  path = write_json(args.results_dir, f'incidents{suffix}', result)
  plot(result, os.path.join(args.results_dir, f'incidents{suffix}.png'))
  print(f"{result['records']:,} records: {result['alerts']:,} alerts "
        f"{result['alerts_by_kind']} -> {result['incidents']:,} incidents "
        f"{result['incidents_by_kind']}; dead letters {len(dead)}")
  print(f"normal records alerted {normal['alerted']:.2%} (covered by an incident "
        f"{normal['covered']:.2%})")
  print(f"{'family':18s} {'records':>8s} {'covered':>8s} {'alerted':>8s}")
  for label, v in families.items():
    print(f"{label:18s} {v['records']:8,d} {v['covered']:8.1%} {v['alerted']:8.1%}")
  print(f'goals met: {result["goals_met"]}; results in {path}')


if __name__ == '__main__':
  main()
