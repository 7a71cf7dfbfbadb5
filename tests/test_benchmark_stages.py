"""benchmarks/stages.py at tiny size, so that it does not rot: every stage of every stream is
timed over the records generated, and the table, JSON and plot are written."""

import json
import os

from benchmarks import stages


def test_stages_benchmark_smoke(synthetic_model_dir, tmp_path):
  stages.main(['--records=300', '--batch_size=50', '--batch_size=300',
               f'--model_dir={synthetic_model_dir}', f'--results_dir={tmp_path}'])
  result = json.loads((tmp_path / 'stages.json').read_text())
  assert [row['batch_size'] for row in result['sweep']] == [50, 300]
  for row in result['sweep']:
    for stream in ('network', 'process', 'memory'):
      assert row[stream]['records'] >= 300, (stream, row[stream])
      assert set(row[stream]['us_per_record']) == {'parse', 'enrich', 'inference', 'write'}
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
