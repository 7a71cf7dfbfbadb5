"""The whole detection graph on the DirectRunner, in streaming (TestStream) and batch (files,
through the CLI), checked by reading the Parquet it writes back with pyarrow."""

from __future__ import annotations

import json
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from pipelines import stream as stream_job
from schemas.outputs import OUTPUT_SCHEMAS
from tests.factories import BASE_TS, memory_record, message, network_record, process_record
from tests.helpers import read_output
from transforms.detect import DetectAttacks
from transforms.enrich import UNBOUNDED
from transforms.join import attack_event_id
from transforms.outputs import WriteOutputs


def host_traffic():
  """Two machines; machine 1 runs a miner (attack on both streams, 8 s apart, in separate
  messages) and sshd (benign); machine 2 runs a miner whose memory record is 40 s away."""
  ts = BASE_TS + 100
  process = [
      [process_record(1, 42, 'miner', ts, True), process_record(1, 7, 'sshd', ts, False)],
      [process_record(2, 42, 'miner', ts, True)],
  ]
  memory = [
      [memory_record(1, 42, 'miner', ts + 8, True), memory_record(1, 7, 'sshd', ts + 8, False)],
      [memory_record(2, 42, 'miner', ts + 40, True)],
  ]
  return process, memory


def test_streaming_graph_writes_every_output(model_dir, tmp_path):
  output = str(tmp_path / 'out')
  network = [message('network', network_record(i, attack=i % 4 == 0), offset=i)
             for i in range(40)]
  malformed = [message('network', b'{"duration": 1, "protocol', offset=90),
               message('memory', b'{"not": "an array"}', offset=91),
               message('process', b'\xc3\x28', offset=92)]
  process, memory = host_traffic()
  host = ([message('process', m, offset=i) for i, m in enumerate(process)] +
          [message('memory', m, offset=i) for i, m in enumerate(memory)])

  def timed(messages):
    return [TimestampedValue(m, BASE_TS) for m in messages]

  events = (TestStream()
            .advance_watermark_to(BASE_TS)
            .add_elements(timed(network[:20] + host[:2]))
            .advance_processing_time(70)  # rolls a first set of files
            .add_elements(timed(network[20:] + host[2:] + malformed))
            .advance_watermark_to(BASE_TS + 300)
            .advance_processing_time(70)
            .advance_watermark_to_infinity())
  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = True
  with TestPipeline(options=options) as pipeline:
    # The factories' fixed 2023 times: the event-time bounds are tested in test_fuzz_parse.py.
    outputs = pipeline | events | DetectAttacks(model_dir, site='lab',
                                                event_time_bounds=UNBOUNDED)
    _ = outputs | WriteOutputs(output, site='lab', roll_seconds=60)

  archive = read_output(output, 'archive/network')
  assert sorted(r['uuid'] for r in archive) == sorted(f'net-{i:06d}' for i in range(40))
  assert all(r['prediction'] == (r['label'] == 'smurf.') for r in archive)
  assert {r['model_version'] for r in archive} == {
      os.listdir(os.path.join(model_dir, 'network'))[0]}
  assert {r['CMD_PID'] for r in read_output(output, 'archive/process')} == {
      'miner_42', 'sshd_7'}
  assert len(read_output(output, 'archive/memory')) == 3

  [attack] = read_output(output, 'attacks')
  assert (attack['Process_machine'], attack['Process_CMD_PID']) == (1, 'miner_42')
  assert attack['delta_time'] == 8.0 and attack['Memory_MEM'] == 40.0
  assert set(OUTPUT_SCHEMAS['attacks'].names) <= set(attack)

  alerts = read_output(output, 'alerts')
  assert sorted(a['kind'] for a in alerts) == ['host_attack'] + ['network_anomaly'] * 10
  host_alert = next(a for a in alerts if a['kind'] == 'host_attack')
  assert host_alert['event_id'] == attack['event_id'] and host_alert['machine'] == 1
  assert json.loads(host_alert['details'])['delta_time'] == 8.0

  dead = read_output(output, 'dead_letter')
  assert sorted((d['stream'], d['offset'], d['stage']) for d in dead) == [
      ('memory', 91, 'parse'), ('network', 90, 'parse'), ('process', 92, 'parse')]
  assert {d['payload'] for d in dead} == {m.value for m in malformed}
  # Files rolled by processing time, under dt= folders named by event date.
  files = [f for _, _, fs in os.walk(os.path.join(output, 'archive', 'network')) for f in fs]
  assert 1 <= len(files) <= 2 and all(f.startswith('lab-') for f in files)
  assert os.listdir(os.path.join(output, 'archive', 'network')) == ['dt=2023-11-14']


def test_cli_runs_the_batch_job_from_generator_files(model_dir, tmp_path, capsys):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  process, memory = host_traffic()
  with open(inputs / 'network.jsonl', 'wb') as f:
    for i in range(30):
      f.write(json.dumps(network_record(i, attack=i % 3 == 0)).encode() + b'\n')
    f.write(b'\xff not json\n')
  for name, messages in (('process', process), ('memory', memory)):
    with open(inputs / f'{name}.jsonl', 'w') as f:
      f.writelines(json.dumps(m) + '\n' for m in messages)
  output = str(tmp_path / 'out')
  stream_job.run(['--source=files', f'--input_dir={inputs}', f'--output={output}',
                  f'--model_dir={model_dir}', '--max_event_age_s=0'])

  assert len(read_output(output, 'archive/network')) == 30
  [attack] = read_output(output, 'attacks')
  ts = BASE_TS + 100
  assert attack['event_id'] == attack_event_id(
      {'record_id': attack['Process_record_id']}, {'record_id': attack['Memory_record_id']})
  assert (attack['Process_ts'], attack['Memory_ts']) == (ts, ts + 8)
  [dead] = read_output(output, 'dead_letter')
  assert dead['payload'] == b'\xff not json' and dead['source'].endswith('network.jsonl')
  summary = capsys.readouterr().err
  assert 'network             31          30             1' in summary
  assert 'attacks/                   1 rows in 1 files' in summary
