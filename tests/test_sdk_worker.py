"""The PROCESS-environment worker boot: secrets given as flags never reach the runner's log."""

import json
import logging
import subprocess
import sys

from apache_beam.options.pipeline_options import PipelineOptions

from harness.scripts import ROOT
from pipelines import sdk_worker
from pipelines.sdk_worker import RedactOptions


def test_the_options_log_line_masks_secret_values():
  options = PipelineOptions([
      '--s3_secret_access_key=s3-SECRET', '--s3_access_key_id=AKIA-ID',
      '--kafka_config=sasl.jaas.config=user="u" password="kafka-SECRET"',
      '--s3_endpoint_url=http://127.0.0.1:9000', '--runner=FlinkRunner'])
  # The record Beam's sdk_worker_main logs at start-up, as it builds it.
  record = logging.LogRecord('apache_beam.runners.worker.sdk_worker_main', logging.INFO, __file__,
                             1, 'Pipeline_options: %s',
                             (options.get_all_options(drop_default=True),), None)
  assert RedactOptions().filter(record)
  line = record.getMessage()
  assert 'SECRET' not in line and 'AKIA-ID' not in line
  assert 'http://127.0.0.1:9000' in line and 'FlinkRunner' in line  # the rest stays readable


def _fresh_interpreter(code: str):
  """What ``code`` prints as JSON, run in a new interpreter (a worker's state from its start)."""
  return json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                   check=True, cwd=ROOT).stdout)


def test_a_worker_freezes_what_it_loaded_and_collects_young_objects_less_often():
  code = ('import gc, json; from pipelines import sdk_worker; before = gc.get_threshold(); '
          'sdk_worker.collect_garbage_less_often(); '
          'print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))')
  before, after, frozen = _fresh_interpreter(code)
  assert before == [700, 10, 10] and after == list(sdk_worker.GC_THRESHOLDS)
  assert frozen > 10_000  # Beam and the project's modules, out of every later collection


def test_a_worker_samples_bundle_states_with_a_period_its_bundles_need_not_wait_out():
  code = ('import json; from apache_beam.utils.counters import CounterFactory; '
          'from apache_beam.runners.worker import statesampler; from pipelines import sdk_worker; '
          'period = lambda: statesampler.StateSampler("s", CounterFactory()).sampling_period_ms; '
          'before = period(); changed = sdk_worker.sample_states_with_a_shorter_period(); '
          'print(json.dumps([before, changed, period()]))')
  before, changed, after = _fresh_interpreter(code)
  assert before == 200 and changed and after == sdk_worker.STATE_SAMPLING_PERIOD_MS


def test_every_stage_of_a_worker_sends_its_output_to_the_runner_by_whole_elements():
  # A worker may host only stages that do not read Kafka (the file writers, incidents), whose
  # DoFns never install it themselves.
  code = ('import json, gc; from transforms import fn_data; from pipelines import sdk_worker; '
          'before = fn_data.installed(); sdk_worker.tune_interpreter(); '
          'print(json.dumps([before, fn_data.installed(), gc.get_threshold()[0]]))')
  before, after, threshold = _fresh_interpreter(code)
  assert not before and after and threshold == sdk_worker.GC_THRESHOLDS[0]
