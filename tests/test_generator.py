"""The data generator: KDD reader, synthetic sources, messages, malformed injection, rate
limiting, the CLI with the file sink, and (when a broker is reachable) the Kafka sink.

The helpers below re-implement DESIGN.md's message rules independently of transforms/, so
that the generator is checked against the contract rather than against its consumer.
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import os
import random
import re
import time
import uuid as uuid_lib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from generator import messages as msgs
from schemas.kdd import read_kdd_csv
from generator.rate import TokenBucket
from generator.sinks import JsonLinesSink
from generator.source import SourceConfig, generate_messages
from generator.synthetic_host import HostSimulator, generate_host, messy
from generator.synthetic_network import CATEGORY, DEFAULT_MIX, LABELS, generate_network
from pipelines import generate as cli
from schemas.records import FLOAT, INT, KDD_FEATURES, MEMORY, NETWORK, PROCESS, SCHEMAS, STR
from tests.helpers import START_MS

DATA = os.path.join(os.path.dirname(__file__), 'data')
KDD_PLAIN = os.path.join(DATA, 'kdd_sample.csv')
KDD_GZ = os.path.join(DATA, 'kdd_sample.csv.gz')
START_ISO = '2026-01-01T00:00:00Z'

# ---- DESIGN.md's rules, independently ---------------------------------------------------------

_NUMBER = re.compile(r'([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([KMGT%]?)')
_UNIT = {'': 1, '%': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9, 'T': 1e12}


def parse_messy(value):
  """A messy value as DESIGN.md reads it; None when missing; ValueError when broken."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    raise ValueError(f'{type(value).__name__} is not a number')
  if isinstance(value, str):
    text = value.strip()
    if text in ('', '-'):
      return None
    match = _NUMBER.fullmatch(text)
    if not match:
      raise ValueError(f'not a number: {value!r}')
    number = float(match.group(1)) * _UNIT[match.group(2)]
  else:
    number = float(value)
  if not math.isfinite(number) or abs(number) > 2.0**62:
    raise ValueError(f'out of range: {value!r}')
  return number


def _reject_constant(name):
  raise ValueError(name)


def strictly_valid(stream: str, value: bytes) -> bool:
  """Whether a message is well-formed for its stream per DESIGN.md."""
  try:
    decoded = json.loads(value.decode('utf-8'), parse_constant=_reject_constant)
  except (ValueError, RecursionError):
    return False
  if stream == 'network':
    records = [decoded]
  elif isinstance(decoded, list) and decoded:
    records = decoded
  else:
    return False
  schema = SCHEMAS[stream]
  for record in records:
    if not isinstance(record, dict):
      return False
    for field in schema.fields:
      value = record.get(field.name)
      if field.kind == STR:
        if value is not None and not isinstance(value, str):
          return False
        missing = value is None or not value.strip()
      else:
        try:
          missing = parse_messy(value) is None
        except (ValueError, OverflowError):
          return False
      if missing and field.required:
        return False
  return True


def lines(path: str) -> list[bytes]:
  with open(path, 'rb') as f:
    return f.read().split(b'\n')[:-1]


# ---- KDD reader -------------------------------------------------------------------------------

def test_read_kdd_csv_types_labels_and_values():
  frame = read_kdd_csv(KDD_PLAIN)
  assert list(frame.columns) == list(KDD_FEATURES) + ['label']
  assert len(frame) == 40
  for name in KDD_FEATURES:
    kind = NETWORK.field(name).kind
    expected = {INT: 'int64', FLOAT: 'float64'}.get(kind)
    if expected:
      assert str(frame[name].dtype) == expected, name
    else:
      assert pd.api.types.is_string_dtype(frame[name]), name
  assert not frame['label'].str.endswith('.').any()
  assert {'normal', 'smurf', 'neptune'} <= set(frame['label'])
  first = frame.iloc[0]
  assert (first['protocol_type'], first['service'], first['flag']) == ('tcp', 'http', 'SF')
  assert (first['src_bytes'], first['dst_bytes'], first['count']) == (181, 5450, 8)
  assert first['dst_host_same_src_port_rate'] == pytest.approx(0.11)
  assert first['label'] == 'normal'


def test_read_kdd_csv_gzip_equals_plain_whatever_the_name(tmp_path):
  plain = read_kdd_csv(KDD_PLAIN)
  pd.testing.assert_frame_equal(read_kdd_csv(KDD_GZ), plain)
  renamed = tmp_path / 'kddcup.data_10_percent'  # gzip without .gz, as downloads often are
  renamed.write_bytes(open(KDD_GZ, 'rb').read())
  pd.testing.assert_frame_equal(read_kdd_csv(renamed), plain)


def test_read_kdd_csv_refuses_a_wrong_layout(tmp_path):
  bad = tmp_path / 'bad.csv'
  bad.write_text('0,tcp,http,SF,181\n')
  with pytest.raises(ValueError):
    read_kdd_csv(bad)


# ---- synthetic network ------------------------------------------------------------------------

def test_generate_network_matches_the_reader_and_is_deterministic():
  frame = generate_network(3000, seed=5)
  assert list(frame.columns) == list(KDD_FEATURES) + ['label']
  assert frame.dtypes.to_dict() == read_kdd_csv(KDD_PLAIN).dtypes.to_dict()
  pd.testing.assert_frame_equal(frame, generate_network(3000, seed=5))
  assert not frame.equals(generate_network(3000, seed=6))
  rates = [n for n in KDD_FEATURES if NETWORK.field(n).kind == FLOAT]
  assert frame[rates].min().min() >= 0 and frame[rates].max().max() <= 1
  assert (frame[rates] * 100 - (frame[rates] * 100).round()).abs().max().max() < 1e-6
  assert frame[['count', 'srv_count']].max().max() <= 511
  assert frame[['dst_host_count', 'dst_host_srv_count']].max().max() <= 255
  assert set(frame['protocol_type']) <= {'tcp', 'udp', 'icmp'}
  assert frame['service'].nunique() > 20


def test_generate_network_default_mixture_is_the_10_percent_file():
  n = 60000
  counts = generate_network(n, seed=11)['label'].value_counts()
  assert set(counts.index) <= set(LABELS)
  for label in ('smurf', 'neptune', 'normal'):
    assert counts[label] / n == pytest.approx(DEFAULT_MIX[label], abs=0.01), label
  categories = counts.groupby(lambda label: CATEGORY[label]).sum() / n
  assert categories['dos'] == pytest.approx(0.7924, abs=0.01)
  assert categories['probe'] == pytest.approx(0.0083, abs=0.003)
  assert categories['r2l'] + categories.get('u2r', 0) == pytest.approx(0.0023, abs=0.0015)
  assert counts.get('back', 0) > 100 and counts.get('satan', 0) > 100


def test_generate_network_custom_mix():
  counts = generate_network(4000, seed=1, mix={'normal': 3, 'satan': 1})['label'].value_counts()
  assert set(counts.index) == {'normal', 'satan'}
  assert counts['normal'] / 4000 == pytest.approx(0.75, abs=0.03)
  with pytest.raises(ValueError):
    generate_network(10, seed=1, mix={'no_such_attack': 1})


def _best_stump(x: np.ndarray, y: np.ndarray) -> float:
  """The best balanced accuracy of one threshold on ``x`` (either direction)."""
  order = np.argsort(x, kind='stable')
  xs, ys = x[order], y[order]
  positives, negatives = ys.sum(), len(ys) - ys.sum()
  cut = np.flatnonzero(np.diff(xs)) + 1  # thresholds between distinct values
  tp_below = np.cumsum(ys)[cut - 1]
  tn_below = cut - tp_below
  # rows below the threshold predicted normal: balanced accuracy from both sides
  acc = 0.5 * (tn_below / negatives + (positives - tp_below) / positives)
  return float(np.max(np.maximum(acc, 1 - acc))) if len(acc) else 0.5


def test_no_single_field_separates_attacks_from_normal():
  frame = generate_network(20000, seed=3)
  y = (frame['label'] != 'normal').to_numpy(dtype=int)
  scores = {}
  for name in KDD_FEATURES:
    if name in NETWORK.categorical_features:
      # one category against the rest
      values = frame[name].to_numpy()
      scores[name] = max(_best_stump((values == v).astype(float), y) for v in set(values))
    else:
      scores[name] = _best_stump(frame[name].to_numpy(dtype=float), y)
  best = max(scores, key=scores.get)
  assert scores[best] < 0.97, (best, scores[best])
  # ... per attack category too (R2L / U2R are normal-looking sessions with odd content).
  for category in ('dos', 'probe', 'r2l'):
    rows = frame['label'].map(CATEGORY).isin(['normal', category]).to_numpy()
    yc = (frame['label'][rows] != 'normal').to_numpy(dtype=int)
    numeric = [n for n in KDD_FEATURES if n not in NETWORK.categorical_features]
    best = max(_best_stump(frame[n][rows].to_numpy(dtype=float), yc) for n in numeric)
    assert best < 0.99, category


def test_attacks_are_learnable_but_not_perfectly():
  from sklearn.tree import DecisionTreeClassifier
  frame = generate_network(30000, seed=4)
  X = pd.get_dummies(frame[list(KDD_FEATURES)], columns=list(NETWORK.categorical_features))
  y = (frame['label'] != 'normal').to_numpy()
  tree = DecisionTreeClassifier(max_depth=8, random_state=0).fit(X[:20000], y[:20000])
  predicted = tree.predict(X[20000:])
  errors = int((predicted != y[20000:]).sum())
  assert 0 < errors < 0.03 * 10000
  normal = ~y[20000:]
  assert predicted[normal].mean() > 0  # some normal traffic looks like an attack


# ---- synthetic host ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def host_records():
  return generate_host(n_machines=10, seconds=600, seed=7, start_ts=1_700_000_000,
                       attack_fraction=0.05)


def test_generate_host_records_follow_the_schemas(host_records):
  process, memory = host_records
  assert len(process) == len(memory) > 1000
  for record in process[:300]:
    assert list(record) == list(PROCESS.names)
    assert record['NICE'] == record['PRI'] - 120
    assert record['attack'] in (0, 1)
  for record in memory[:300]:
    assert list(record) == list(MEMORY.names)
  for schema, records in ((PROCESS, process), (MEMORY, memory)):
    for f in schema.fields:
      kinds = {type(r[f.name]) for r in records}
      assert kinds <= {STR: {str}, INT: {int}, FLOAT: {float}}[f.kind], (f.name, kinds)
  ts = [r['ts'] for r in process]
  assert ts == sorted(ts) and 1_700_000_000 <= ts[0] and ts[-1] < 1_700_000_600
  # one sample per machine every few seconds
  per_machine = collections.defaultdict(set)
  for record in process:
    per_machine[record['machine']].add(record['ts'])
  assert len(per_machine) == 10
  for stamps in per_machine.values():
    gaps = np.diff(sorted(stamps))
    assert 3 <= gaps.min() and gaps.max() <= 6


def test_attacks_show_up_on_both_streams_within_seconds(host_records):
  process, memory = host_records
  mem = {(r['machine'], r['sequence'], r['PID']): r for r in memory}
  for record in process:
    partner = mem[(record['machine'], record['sequence'], record['PID'])]
    assert partner['CMD'] == record['CMD'] and partner['attack'] == record['attack']
    assert 0 <= partner['ts'] - record['ts'] <= 3
  attacks = [r for r in process if r['attack']]
  share = len(attacks) / len(process)
  assert 0.02 < share < 0.1
  attack_cmds = {r['CMD'] for r in attacks}
  benign_cmds = {r['CMD'] for r in process if not r['attack']}
  assert attack_cmds & benign_cmds  # CMD alone does not give an attacker away
  # benign look-alikes: heavy CPU and big memory that are not attacks
  assert any(r['CPU'] > 90 for r in process if not r['attack'])
  assert any(r['RSIZE'] > 1e9 for r in memory if not r['attack'])
  assert any(r['MAJFLT'] > 500 for r in memory if not r['attack'])


def test_generate_host_is_deterministic_and_attack_free_on_request():
  a = generate_host(3, 60, seed=1, start_ts=1_700_000_000)
  assert a == generate_host(3, 60, seed=1, start_ts=1_700_000_000)
  assert a != generate_host(3, 60, seed=2, start_ts=1_700_000_000)
  process, _ = generate_host(4, 300, seed=1, start_ts=0, attack_fraction=0.0)
  assert not any(r['attack'] for r in process)


# ---- messy rendering --------------------------------------------------------------------------

def test_messy_examples_from_the_design():
  assert msgs_with_unit(1500, True) == '1.5K'
  assert msgs_with_unit(12_000_000.0, False) == '12M'
  assert msgs_with_unit(2e9, False) == '2G'
  assert msgs_with_unit(-3000, True) == '-3K'
  assert msgs_with_unit(1234, True) is None  # "1.23K" would lose the 4
  for text, number in ((' 1.5K', 1500), ('12M', 12e6), ('2G', 2e9), ('-3K', -3000),
                       ('40%', 40.0), ('', None), ('-', None), (' 7 ', 7)):
    assert parse_messy(text) == number


def msgs_with_unit(value, is_int):
  from generator.synthetic_host import _with_unit
  return _with_unit(value, is_int)


def test_messy_records_read_back_to_the_clean_ones(host_records):
  process, memory = host_records
  rng = random.Random(0)
  seen_suffix = seen_percent = seen_space = seen_missing = 0
  for schema, records in ((PROCESS, process[:3000]), (MEMORY, memory[:3000])):
    for record in records:
      rendered = messy(record, rng)
      assert set(rendered) == set(record)
      for f in schema.fields:
        raw, clean = rendered[f.name], record[f.name]
        if f.kind == STR:
          back = raw.strip() or None
          assert back is None and not f.required or back == clean, (f.name, raw, clean)
          continue
        number = parse_messy(raw)
        if number is None:
          assert not f.required and f.name != 'attack', (f.name, raw)
          seen_missing += 1
          continue
        assert math.isclose(number, clean, rel_tol=1e-9, abs_tol=1e-9), (f.name, raw, clean)
        if isinstance(raw, str):
          seen_suffix += raw.strip()[-1:] in 'KMG'
          seen_percent += raw.strip().endswith('%')
          seen_space += raw != raw.strip()
  assert min(seen_suffix, seen_percent, seen_space, seen_missing) > 10


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(-10**13, 10**13),
                 st.floats(-1e13, 1e13).map(lambda x: float(f'{x:.3g}'))),
       st.integers(0, 2**32))
def test_messy_numbers_are_exact(value, seed):
  field = 'MINFLT' if isinstance(value, int) else 'VGROW'
  record = {'machine': 1, 'PID': 2, 'CMD': 'x', 'ts': 3, field: value}
  raw = messy(record, random.Random(seed), missing=0, schema=MEMORY)[field]
  assert math.isclose(parse_messy(raw), value, rel_tol=1e-9, abs_tol=1e-9), raw


# ---- messages and malformed injection -------------------------------------------------------

def _sample_messages():
  rng = random.Random(1)
  out = []
  for i, row in enumerate(msgs.network_rows(generate_network(50, seed=1))):
    out.append(('network', msgs.network_message(
        row, topic='n', timestamp_ms=START_MS + i, sequence_id=i, index=i, site='s', rng=rng)))
  samples = HostSimulator(3, seed=1, start_ts=START_MS // 1000).samples()
  for _, sample in zip(range(40), samples):
    out.append((sample.stream, msgs.host_message(sample, topic=sample.stream, rng=rng)))
  return out


def test_network_message_format():
  stream, message = _sample_messages()[0]
  record = json.loads(message.value)
  assert list(record)[:41] == list(KDD_FEATURES)
  assert record['label'] in LABELS
  assert str(uuid_lib.UUID(record['uuid'])) == record['uuid'] == message.uuids[0]
  assert uuid_lib.UUID(record['uuid']).version == 4
  assert record['utc'] == '2026-01-01T00:00:00.000Z'
  assert (record['sequence_id'], record['index'], record['site']) == (0, 0, 's')
  assert message.timestamp_ms == START_MS and message.key is None and not message.malformed


def test_generated_messages_are_well_formed():
  for stream, message in _sample_messages():
    assert strictly_valid(stream, message.value), (stream, message.value[:200])
    assert b'\n' not in message.value
    if stream != 'network':
      records = json.loads(message.value)
      assert isinstance(records, list) and records
      assert message.key == str(parse_messy(records[0]['machine']))[:-2].encode()


def test_malform_breaks_every_message_in_many_ways():
  rng = random.Random(2)
  kinds = collections.Counter()
  for _ in range(6):
    for stream, message in _sample_messages():
      kind, broken = msgs.malform_kind(message.value, rng)
      kinds[kind] += 1
      assert b'\n' not in broken
      assert not strictly_valid(stream, broken), (stream, kind, broken[:200])
  assert set(kinds) == set(msgs.KINDS)


# ---- the message source and the CLI with the file sink ---------------------------------------

def test_malformed_injection_counts(tmp_path, capsys):
  report_path = tmp_path / 'report.json'
  status = cli.main(['--output_dir', str(tmp_path), '--count', '8000', '--rate', '0',
                     '--seed', '3', '--malformed_fraction', '0.05', '--start_time', START_ISO,
                     '--machines', '10', '--no_progress', '--report_json', str(report_path)])
  assert status == 0
  report = json.loads(report_path.read_text())
  assert capsys.readouterr().out.startswith('generate: sent=8000 acknowledged=8000 failed=0')
  assert report['sent'] == report['acknowledged'] == 8000 and report['failed'] == 0
  broken = total = 0
  for stream in ('network', 'process', 'memory'):
    values = lines(tmp_path / f'{stream}.jsonl')
    assert len(values) == report['streams'][stream]['sent'] > 0
    bad = sum(not strictly_valid(stream, v) for v in values)
    assert bad == report['streams'][stream]['malformed'], stream
    broken, total = broken + bad, total + len(values)
  assert total == 8000 and broken == report['malformed']
  # binomial(8000, 0.05): sd 19.5
  assert abs(broken - 400) < 100


def test_source_orders_streams_on_one_clock_and_is_reproducible():
  config = dict(count=3000, seed=9, start_ms=START_MS, rate=500, machines=5)
  messages = list(generate_messages(SourceConfig(**config)))
  assert messages == list(generate_messages(SourceConfig(**config)))
  topics = collections.Counter(m.topic for m in messages)
  assert set(topics) == {'sensor_messages', 'process_activity', 'memory_activity'}
  network = [json.loads(m.value) for m in messages if m.topic == 'sensor_messages']
  assert [r['sequence_id'] for r in network] == list(range(len(network)))
  assert len({r['uuid'] for r in network}) == len(network)
  # network event times follow the 500/s slots; the run spans count / rate seconds
  stamps = [m.timestamp_ms for m in messages]
  assert stamps == sorted(stamps)
  assert stamps[-1] - START_MS == pytest.approx(3000 / 500 * 1000, rel=0.01)
  host = [m for m in messages if m.topic == 'process_activity']
  for m in host:
    assert {parse_messy(r['ts']) for r in json.loads(m.value)} == {m.timestamp_ms / 1000}
  # a different malformed fraction breaks other messages but keeps the records
  other = list(generate_messages(SourceConfig(**config, malformed_fraction=0.1)))
  same = [a for a, b in zip(messages, other) if not b.malformed]
  assert all(a.value == b.value for a, b in zip(messages, other) if not b.malformed)
  assert len(same) < len(messages)


def test_duration_and_host_only_streams():
  config = SourceConfig(streams=('process', 'memory'), duration_s=60, seed=1, start_ms=START_MS,
                        machines=4)
  messages = list(generate_messages(config))
  assert {m.topic for m in messages} == {'process_activity', 'memory_activity'}
  stamps = [m.timestamp_ms for m in messages]
  assert stamps == sorted(stamps) and stamps[-1] < START_MS + 60_000
  # 4 machines sampled every 3 to 6 s on two streams
  assert 4 * 2 * 60 / 6 <= len(messages) <= 4 * 2 * 60 / 3 + 8
  # unthrottled, --event_rate spaces the event times (and so sets the host share)
  config = SourceConfig(count=500, seed=1, start_ms=START_MS, machines=4, event_rate=10)
  messages = list(generate_messages(config))
  assert messages[-1].timestamp_ms - START_MS == pytest.approx(50_000, rel=0.02)
  assert sum(m.topic != 'sensor_messages' for m in messages) > 50


def test_one_sequential_pass_sends_the_file_once_in_order(tmp_path):
  status = cli.main(['--source', 'kdd', '--kdd_file', KDD_GZ, '--one_sequential_pass',
                     '--streams', 'network', '--output_dir', str(tmp_path), '--rate', '0',
                     '--no_progress', '--site', 'lab'])
  assert status == 0
  records = [json.loads(v) for v in lines(tmp_path / 'network.jsonl')]
  expected = read_kdd_csv(KDD_PLAIN)
  assert [r['index'] for r in records] == list(range(len(expected)))
  assert [r['label'] for r in records] == expected['label'].tolist()
  assert [r['src_bytes'] for r in records] == expected['src_bytes'].tolist()
  assert {r['site'] for r in records} == {'lab'}
  assert not os.path.exists(tmp_path / 'process.jsonl')


def test_kdd_random_order_covers_the_file_each_pass():
  frame = read_kdd_csv(KDD_PLAIN)
  config = SourceConfig(streams=('network',), source='kdd', frame=frame, count=100, seed=1,
                        start_ms=START_MS)
  indices = [json.loads(m.value)['index'] for m in generate_messages(config)]
  assert sorted(indices[:40]) == list(range(40)) and indices[:40] != list(range(40))
  assert sorted(indices[40:80]) == list(range(40))


def test_json_lines_sink_writes_values_verbatim(tmp_path):
  sink = JsonLinesSink(tmp_path)
  value = msgs.malform(b'{"a":"b\\nc"}', random.Random(1))
  sink.send(msgs.Message('sensor_messages', None, value, 0, ('u',), True))
  sink.send(msgs.Message('memory_activity', b'1', b'[{"x":1}]', 0))
  sink.close()
  assert lines(tmp_path / 'network.jsonl') == [value]
  assert lines(tmp_path / 'memory.jsonl') == [b'[{"x":1}]']
  assert sink.stats() == {'sent': 2, 'acknowledged': 2, 'failed': 0}
  assert sink.acked_uuids == []  # a malformed message's uuid is not claimed


def test_cli_never_prints_producer_secrets(capsys, monkeypatch):
  monkeypatch.setenv('KAFKA_PRODUCER_SASL_PASSWORD', 'EnvSecret0042')
  assert cli.producer_config([('linger.ms', 'x')])['sasl.password'] == 'EnvSecret0042'
  with pytest.raises(SystemExit):
    cli.main(['--bootstrap_servers', '127.0.0.1:1', '--count', '1',
              '--producer_config', 'linger.ms=TopSecretValue9'])
  captured = capsys.readouterr()
  assert 'TopSecretValue9' not in captured.out + captured.err
  assert 'EnvSecret0042' not in captured.out + captured.err
  with pytest.raises(SystemExit):
    cli.main(['--output_dir', '/tmp/x', '--producer_config', 'no_equals_sign_Secret77'])
  assert 'Secret77' not in capsys.readouterr().err


def test_cli_help_lists_the_options(capsys):
  with pytest.raises(SystemExit):
    cli.main(['--help'])
  text = capsys.readouterr().out
  for option in ('--source', '--kdd_file', '--streams', '--count', '--duration_s', '--rate',
                 '--seed', '--malformed_fraction', '--one_sequential_pass',
                 '--bootstrap_servers', '--output_dir', '--network_topic', '--site',
                 '--machines', '--producer_config'):
    assert option in text


# ---- rate limiting ----------------------------------------------------------------------------

def test_token_bucket_arithmetic_with_a_fake_clock():
  now = [0.0]
  slept = []

  def sleep(seconds):
    slept.append(seconds)
    now[0] += seconds

  bucket = TokenBucket(100, burst=10, clock=lambda: now[0], sleep=sleep)
  for _ in range(1001):
    bucket.acquire()
  assert now[0] == pytest.approx(10.0)  # the first token is there at once
  now[0] += 5.0  # idle: the bucket refills up to its burst, no more
  slept.clear()
  for _ in range(10):
    bucket.acquire()
  assert sum(slept) == pytest.approx(0.0)
  bucket.acquire(50)  # more than the burst: a debt, repaid by sleeping
  assert sum(slept) == pytest.approx(0.5)


def test_token_bucket_rate_within_5_percent():
  rate, duration = 2000.0, 2.5
  bucket = TokenBucket(rate)
  sent = 0
  start = time.monotonic()
  while time.monotonic() - start < duration:
    bucket.acquire()
    sent += 1
  elapsed = time.monotonic() - start
  assert sent / elapsed == pytest.approx(rate, rel=0.05)
