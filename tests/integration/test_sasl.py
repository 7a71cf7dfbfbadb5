"""Kafka credentials: the generator and the stream job (on embedded Flink) authenticate to a
real SASL_PLAINTEXT (PLAIN) listener with a password from the environment, and the password
appears in no log line, no console output and no output file."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import uuid

import pytest

from tests.integration.conftest import ROOT, _free_port
from tests.integration.faults import (archived_uuids, make_topics, own_broker,
                                      running_stream_job, stream_args, topics_for, wait_until)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

COUNT = 300


def _files_containing(root: str, needle: bytes) -> list[str]:
  hits = []
  for folder, _, files in os.walk(root):
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        if needle in f.read():
          hits.append(os.path.join(folder, name))
  return hits


def test_sasl_credentials_from_the_environment_are_never_logged(synthetic_model_dir, tmp_path,
                                                                caplog, capfd, monkeypatch):
  password = f'pw-{secrets.token_hex(12)}'
  sasl_port = _free_port()
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  output = str(tmp_path / 'out')
  with own_broker(str(tmp_path / 'kafka'), {'KAFKA_SASL_PORT': str(sasl_port),
                                             'KAFKA_SASL_USERS': f'detector:{password}'}) as broker:
    make_topics(broker.bootstrap, *topics.values())
    sasl = f'127.0.0.1:{sasl_port}'

    # The generator: settings and password from KAFKA_PRODUCER_* variables.
    env = dict(os.environ, KAFKA_PRODUCER_SECURITY_PROTOCOL='SASL_PLAINTEXT',
               KAFKA_PRODUCER_SASL_MECHANISM='PLAIN', KAFKA_PRODUCER_SASL_USERNAME='detector',
               KAFKA_PRODUCER_SASL_PASSWORD=password)
    command = [sys.executable, '-m', 'pipelines.generate', '--bootstrap_servers', sasl,
               '--streams', 'network', '--count', str(COUNT), '--rate', '1000',
               '--network_topic', topics['network'], '--no_progress']
    generated = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120, check=False)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert password not in generated.stdout + generated.stderr
    # The listener really checks the password: a wrong one is refused.
    wrong = subprocess.run(command[:-1] + ['--count', '1', '--flush_timeout_s', '8'], cwd=ROOT,
                           env={**env, 'KAFKA_PRODUCER_SASL_PASSWORD': 'wrong'},
                           capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode != 0

    # The stream job: protocol and mechanism from the properties file, the JAAS line (with the
    # password) from the environment.
    properties = tmp_path / 'kafka.properties'
    properties.write_text('security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n')
    monkeypatch.setenv('KAFKA_CLIENT_SASL_JAAS_CONFIG',
                       'org.apache.kafka.common.security.plain.PlainLoginModule required '
                       f'username="detector" password="{password}";')
    caplog.set_level(logging.INFO)
    args = stream_args(sasl, topics, output, synthetic_model_dir, '[local]',
                       f'--kafka_config_file={properties}', f'--job_name=sasl-{suffix}')
    with running_stream_job(args):
      wait_until(lambda: len(archived_uuids(output)) >= COUNT, 120, 'every record archived')
  console = capfd.readouterr()
  logs = caplog.text
  print(f'[accounting] SASL: sent {COUNT}, archived {len(archived_uuids(output))}; '
        f'{len(logs.splitlines())} log lines and {len(console.out + console.err)} console '
        'characters checked')
  assert len(archived_uuids(output)) == COUNT
  # Not vacuous: the Kafka clients in Flink dumped their config, SASL settings included, into
  # the very logs checked here; kafka-clients masks the JAAS line itself.
  assert 'sasl.jaas.config = [hidden]' in logs and 'sasl.mechanism = PLAIN' in logs
  for text in (logs, console.out, console.err):
    assert password not in text
  assert not _files_containing(output, password.encode()), 'the password in an output file'
