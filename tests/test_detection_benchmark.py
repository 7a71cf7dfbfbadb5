"""benchmarks.detection's own parts that need no real data: the literature's subsets, the KDD
CSV it feeds the retrain (labels removed), the coverage and the CLI."""

import gzip

import numpy as np
import pandas as pd
import pytest

from benchmarks import detection
from generator.synthetic_network import generate_network
from schemas.kdd import read_kdd_csv


@pytest.fixture(scope='module')
def frame():
  return generate_network(3000, seed=5)


def test_subsets_follow_the_literature(frame):
  attack = (frame['label'] != 'normal').to_numpy()
  sa = detection.subset_rows(frame, 'SA', seed=0)
  assert set(np.flatnonzero(~attack)) <= set(sa)
  assert (attack[sa]).sum() == round(attack.sum() * detection.SA_ATTACK_SHARE)
  np.testing.assert_array_equal(sa, detection.subset_rows(frame, 'SA', seed=0))
  assert not np.array_equal(sa, detection.subset_rows(frame, 'SA', seed=1))
  http = detection.subset_rows(frame, 'http')
  assert len(http) and (frame['service'].to_numpy()[http] == 'http').all()
  assert (frame['logged_in'].to_numpy()[http] == 1).all()
  with pytest.raises(ValueError, match='unknown subset'):
    detection.subset_rows(frame, 'ftp')


def test_the_retrain_input_carries_no_labels(frame, tmp_path):
  path = detection.write_csv(frame.iloc[:200], str(tmp_path / 'rows.csv.gz'), labelled=False)
  back = read_kdd_csv(path)
  assert len(back) == 200 and set(back['label']) == {'normal'}
  pd.testing.assert_series_equal(back['src_bytes'], frame['src_bytes'].iloc[:200],
                                 check_names=False, check_dtype=False)
  with gzip.open(detection.write_csv(frame.iloc[:5], str(tmp_path / 'l.csv.gz'), True), 'rt') as f:
    assert f.readline().rstrip().endswith(frame['label'].iloc[0] + '.')


def test_family_coverage_counts_families_with_enough_records():
  labels = np.array(['normal'] * 100 + ['smurf'] * 60 + ['rare'] * 3, dtype=object)
  scores = np.r_[np.zeros(100), np.r_[np.ones(45), np.zeros(15)], np.ones(3)]
  coverage = detection.family_coverage(labels, scores, 0.5)
  assert coverage == {'normal': 0.0, 'smurf': 0.75}


def test_help(capsys):
  with pytest.raises(SystemExit) as exit_info:
    detection.main(['--help'])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert '--kdd_file' in out and 'IsolationForest' in out
