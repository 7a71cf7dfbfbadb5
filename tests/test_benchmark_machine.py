"""The machine's calibration figures that every benchmark records (benchmarks/common.py)."""

import os

from benchmarks import common
from harness import procs


def test_the_calibration_figures_are_measured_and_leave_no_process_behind():
  before = set(procs.children(os.getpid()))
  speed = common.machine_speed()
  assert 0 < speed['python_loop_ms'] < 10_000
  assert 0 < speed['pipe_round_trip_us'] < 100_000
  assert set(procs.children(os.getpid())) <= before
  line = common.machine_line(common.machine_info())
  assert 'speed: Python loop' in line and ' us;' in line
