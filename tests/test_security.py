"""Secure defaults of the stream job (DirectRunner, files source): a model that does not match
its manifest is refused with a clear error; record content cannot steer output paths.
(Kafka secrets never logged, against a real SASL listener: tests/integration/test_sasl.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from model import registry
from pipelines import stream as stream_job
from tests.factories import BASE_TS, memory_record, network_record, process_record
from tests.helpers import read_output


def _write_inputs(folder, network, process=(), memory=()) -> str:
  folder.mkdir()
  for name, messages in (('network', network), ('process', process), ('memory', memory)):
    with open(folder / f'{name}.jsonl', 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(m) + '\n' for m in messages)
  return str(folder)


def test_a_tampered_model_stops_the_stream_job_with_a_clear_error(model_dir, tmp_path):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  version = registry.latest_version(models, 'network')
  with open(os.path.join(models, 'network', version, registry.MODEL_FILE), 'ab') as f:
    f.write(b'\0')  # one byte appended: a corrupt copy or a swapped file
  inputs = _write_inputs(tmp_path / 'in', [network_record(i) for i in range(5)])
  with pytest.raises(Exception, match=rf'refusing to load .*{re.escape(registry.MODEL_FILE)}: '
                     'its sha256 is') as e:
    stream_job.run(['--source=files', f'--input_dir={inputs}',
                    f'--output={tmp_path / "out"}', f'--model_dir={models}',
                    '--max_event_age_s=0'])
  assert 'ModelIntegrityError' in str(e.value) or isinstance(e.value, registry.ModelIntegrityError)
  assert not read_output(str(tmp_path / 'out'), 'archive/network'), 'nothing scored by it'


HOSTILE_NAMES = ['../../x', '/etc/passwd', '..', 'a/../../b', '..\\..\\win', '\0nul', '~root']


def test_record_content_cannot_steer_output_paths(model_dir, tmp_path):
  ts = BASE_TS + 60
  network = [network_record(i, site=name, uuid=f'../../u{i}', service=name)
             for i, name in enumerate(HOSTILE_NAMES)]
  process = [[process_record(1, 7, name, ts, True) for name in HOSTILE_NAMES]]
  memory = [[memory_record(1, 7, name, ts + 2, True) for name in HOSTILE_NAMES]]
  inputs = _write_inputs(tmp_path / 'in', network, process, memory)
  output = tmp_path / 'deep' / 'out'
  stream_job.run(['--source=files', f'--input_dir={inputs}', f'--output={output}',
                  f'--model_dir={model_dir}', '--site=../../evil',
                  '--max_event_age_s=0'])

  archived = read_output(str(output), 'archive/network')
  assert sorted(r['site'] for r in archived) == sorted(HOSTILE_NAMES), 'kept as data'
  outside = [os.path.join(root, f) for root, _, files in os.walk(tmp_path) for f in files
             if not os.path.join(root, f).startswith((str(output) + os.sep, inputs + os.sep))]
  assert not outside, f'files written outside --output: {outside}'
  written = [f for _, _, files in os.walk(output) for f in files]
  assert written and all(f.startswith('evil-') for f in written), written
