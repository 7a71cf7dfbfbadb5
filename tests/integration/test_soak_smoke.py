"""A tiny run of the soak benchmark (``python -m benchmarks.soak``): the command works end to
end against the session broker and embedded Flink, samples lag, rows and memory, and gives a
verdict. The real soak (minutes) is a documented command, not part of the suite."""

from __future__ import annotations

import json

import pytest

from benchmarks import soak

pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,  # a benchmark's smoke run
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]


def test_soak_smoke(kafka_bootstrap, synthetic_model_dir, tmp_path):
  report_path = tmp_path / 'soak.json'
  soak.main(['--bootstrap_servers', kafka_bootstrap, '--duration_s', '20', '--rate', '50',
             '--sample_s', '4', '--roll_seconds', '3', '--model_dir', synthetic_model_dir,
             '--output', str(tmp_path / 'out'), '--report_json', str(report_path)])
  report = json.loads(report_path.read_text())
  samples = report['samples']
  assert len(samples) >= 4 and report['acknowledged'] > 0
  assert samples[-1]['archived'] > 0, 'the job archived what was sent'
  assert all(s['jvm_mb'] > 0 and s['python_mb'] > 0 for s in samples), 'memory is sampled'
  assert {'lag_slope_per_s', 'rss_growth_mb_second_half', 'steady'} <= report.keys()
