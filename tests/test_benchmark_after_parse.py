"""Smoke test of benchmarks.after_parse: a small run on real KDD records gives a figure for
each stage (skipped where the KDD file is absent: it is never committed)."""

import os

import pytest

from benchmarks import after_parse


@pytest.mark.skipif(not os.path.exists(after_parse.KDD_FILE),
                    reason=f'no KDD Cup 1999 file at {after_parse.KDD_FILE}')
def test_a_small_run_measures_every_stage(model_dir):
  result = after_parse.main(['--model_dir', model_dir, '--records', '1000', '--batch_size',
                             '500', '--rounds', '1'])
  assert result['records'] == 1000
  [costs] = result['rounds']
  assert set(costs) == set(after_parse.STAGES)
  assert all(0 < us < 10_000 for us in costs.values())
