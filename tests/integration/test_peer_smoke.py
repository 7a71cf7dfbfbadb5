"""``python -m benchmarks.peer`` at tiny size, so that it does not rot: a few thousand real KDD
records, one run of the stream job and one of the PySpark peer against the session broker, both
scoring with the session's signed model; the table, JSON and PNG go to tmp_path. Rates are not
checked, only that both jobs archived every record and that their outputs agree row for row.

Skips when the peer cannot be made here (no Java 17+, no mvn, no PyPI / Maven Central): the
first run makes ``.cache/peer/`` (a venv with pyspark and the Kafka source jars, ~1 minute);
later runs reuse it."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import peer

pytestmark = [pytest.mark.integration, pytest.mark.long]  # a benchmark's smoke run

MESSAGES = 3000


@pytest.fixture(scope='module')
def peer_environment():
  if not os.path.exists(peer.KDD_FILE):
    pytest.skip(f'no KDD Cup file at {peer.KDD_FILE}')
  try:
    return peer.prepare_peer()
  except peer.PeerUnavailable as e:
    pytest.skip(f'the PySpark peer cannot be made on this machine: {e}')


def test_peer_benchmark_smoke(peer_environment, kafka_bootstrap, synthetic_model_dir, tmp_path):
  result = peer.main([
      f'--messages={MESSAGES}', '--runs=1', f'--bootstrap_servers={kafka_bootstrap}',
      f'--model_dir={synthetic_model_dir}', f'--results_dir={tmp_path}', '--timeout_s=240',
      '--stall_s=45', '--max_offsets_per_trigger=1000'])
  product, spark = result['runs']
  assert (product['system'], spark['system']) == ('product', 'peer')
  for run in (product, spark):
    assert run['status'] == 'complete', run
    assert run['records_archived'] == MESSAGES
    assert run['first_output_s'] > 0 and run['cpu_s'] > 0
  assert spark['micro_batches'] >= MESSAGES // 1000
  # Same uuids, each once, and the same prediction for each from the same model.
  comparison = spark['comparison']
  assert comparison['identical'], comparison
  assert comparison['matched_uuids'] == MESSAGES and comparison['predictions_differ'] == 0
  assert comparison['max_score_difference'] < 1e-5
  saved = json.loads((tmp_path / 'peer.json').read_text())
  assert saved['summary']['ratio_product_over_peer']['cpu_s'] > 0
  assert 'ratio' in saved['table'] and os.path.getsize(tmp_path / 'peer.png') > 1000
