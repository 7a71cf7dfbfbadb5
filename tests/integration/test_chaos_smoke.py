"""A short chaos soak (``python -m benchmarks.chaos``): the stream job on a standalone Flink
cluster and a broker of its own, at a low rate, with two fault kinds injected one after the
other: one that fails the job (an SDK worker kill -9, so the benchmark's restart detection is
exercised) and one that does not (a broker restart). Every acknowledged message must be
archived, and the job must come back from both. Each of the four fault kinds is also tested
on its own, with exact accounting, in tests/integration/test_faults.py; the 20-minute soak at
5,000 messages/s with all four is a documented command (benchmarks/README.md), not part of
the suite.

The 60 s recovery limit of the benchmark is not asserted here: on a shared CI machine a
resubmission alone can take most of it. What is asserted is that each fault took effect
(Flink restarted the job) and that the lag came back to its pre-fault level.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import chaos
from tests.helpers import require_jvm_side

pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,  # a benchmark's smoke run; each fault kind is in test_faults.py
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]


SMOKE_FAULTS = ('sdk_worker_kill', 'broker_restart')


def test_chaos_smoke_loses_nothing_and_recovers_from_each_fault(synthetic_model_dir, tmp_path):
  require_jvm_side()
  assert set(SMOKE_FAULTS) <= set(chaos.FAULTS)
  report_path = tmp_path / 'chaos.json'
  chaos.main(['--faults', ','.join(SMOKE_FAULTS), '--duration_s', '20', '--rate', '200', '--seed', '1', '--warmup_s', '5',
              '--min_gap_s', '5', '--roll_seconds', '3', '--model_dir', synthetic_model_dir,
              '--work_dir', str(tmp_path / 'work'), '--output', str(report_path)])
  report = json.loads(report_path.read_text())
  line = report['accounting']
  print('[accounting] chaos smoke: ' + ', '.join(f'{k} {v}' for k, v in line.items()))
  assert line['acknowledged'] == line['sent'] > 0
  assert line['lost'] == 0, line
  assert line['unexpected'] == 0, line
  faults = report['faults']
  assert sorted(f['kind'] for f in faults) == sorted(SMOKE_FAULTS)
  for fault in faults:
    print(f"[fault] {fault['kind']}: restart seen after {fault.get('restart_seen_s')} s, "
          f"recovered in {fault['recovery_s']} s")
    assert 'error' not in fault, fault
    if fault['kind'] in chaos.FAILS_THE_JOB:
      assert fault['restart_seen_s'] is not None, f'{fault["kind"]} did not restart the job'
    assert fault['recovery_s'] is not None, f'no recovery from {fault["kind"]}'
  assert report_path.with_suffix('.png').stat().st_size > 0
