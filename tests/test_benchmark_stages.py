"""benchmarks/stages.py at tiny size, so that it does not rot: every stage of every stream is
timed over the records generated, and the table, JSON and plot are written."""

import json
import os
import shutil

from benchmarks import stages
from generator.synthetic_network import generate_network
from model import registry
from model.detector import fit_supervised
from model.profile import PROFILE_FILE, NormalProfile
from schemas.records import NETWORK


def _with_a_network_profile(model_dir, path):
  """A copy of ``model_dir`` whose newest network model has a normal profile, as a retrained
  one has: the benchmark then times the alerts' reasons too."""
  shutil.copytree(model_dir, path)
  traffic = generate_network(2000, seed=3)
  features, attacks = traffic[list(NETWORK.feature_columns)], traffic['label'] != 'normal'
  model = fit_supervised(NETWORK, features, attacks, max_iter=20)
  profile = NormalProfile.fit(NETWORK, features[~attacks])
  registry.publish(str(path), 'network', model, feature_columns=list(NETWORK.feature_columns),
                   training_rows=len(traffic), extra_files={PROFILE_FILE: profile.to_bytes()})
  return str(path)


def test_stages_benchmark_smoke(synthetic_model_dir, tmp_path):
  models = _with_a_network_profile(synthetic_model_dir, tmp_path / 'models')
  stages.main(['--records=300', '--batch_size=50', '--batch_size=300',
               f'--model_dir={models}', f'--results_dir={tmp_path}'])
  result = json.loads((tmp_path / 'stages.json').read_text())
  assert [row['batch_size'] for row in result['sweep']] == [50, 300]
  for row in result['sweep']:
    for stream in ('network', 'process', 'memory'):
      assert row[stream]['records'] >= 300, (stream, row[stream])
      timed = {'parse', 'enrich', 'inference', 'write'} | (
          {'reasons'} if stream == 'network' else set())  # only its model has a profile
      assert set(row[stream]['us_per_record']) == timed
      assert all(us > 0 for us in row[stream]['us_per_record'].values())
    assert row['join']['us_per_host_record'] >= 0
  assert 'batch size 300' in result['table']
  assert (tmp_path / 'stages.png').stat().st_size > 0


def test_stages_benchmark_parse_alone_on_kdd_records(tmp_path):
  kdd = os.path.join(os.path.dirname(__file__), 'data', 'kdd_sample.csv')
  stages.main(['--records=300', '--batch_size=100', '--only=parse', f'--kdd_file={kdd}',
               f'--results_dir={tmp_path}'])
  result = json.loads((tmp_path / 'stages_parse.json').read_text())
  row, = result['sweep']
  assert row['network']['records'] == 40  # the sample's records, each once, in file order
  for stream in ('process', 'memory'):
    assert row[stream]['records'] >= 300
  for stream in ('network', 'process', 'memory'):
    assert set(row[stream]['us_per_record']) == {'parse'}
    assert row[stream]['us_per_record']['parse'] > 0
  assert 'parse (decode + clean)' in result['table']


def test_spread_blocks_come_from_the_whole_file(monkeypatch):
  kdd = os.path.join(os.path.dirname(__file__), 'data', 'kdd_sample.csv')
  monkeypatch.setattr(stages, 'SPREAD_BLOCK', 10)
  whole = stages.read_kdd_csv(kdd)
  spread = stages.spread_blocks(kdd, 20)
  assert len(spread) == 20
  assert spread.iloc[:10].equals(whole.iloc[:10].reset_index(drop=True))
  assert spread.iloc[10:].reset_index(drop=True).equals(
      whole.iloc[len(whole) - 10:].reset_index(drop=True))  # the last block ends the file


def test_stages_benchmark_every_stage_on_spread_kdd_records(synthetic_model_dir, tmp_path):
  kdd = os.path.join(os.path.dirname(__file__), 'data', 'kdd_sample.csv')
  stages.main(['--records=40', '--batch_size=20', f'--kdd_file={kdd}', '--spread',
               f'--model_dir={synthetic_model_dir}', f'--results_dir={tmp_path}'])
  result = json.loads((tmp_path / 'stages.json').read_text())
  row, = result['sweep']
  assert result['spread'] and row['network']['records'] == 40
  assert all(us > 0 for us in row['network']['us_per_record'].values())
