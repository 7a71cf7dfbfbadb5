"""Kafka credentials and TLS: the generator and the stream job (on embedded Flink)
authenticate to a real SASL listener (PLAIN) with a password from the environment, over plain
TCP (SASL_PLAINTEXT) and over TLS (SASL_SSL, a certificate from a CA made for the test), and
the password appears in no log line, no console output and no output file; the job's alerts
reach their topic through the same listener (published with librdkafka, the settings
translated from their Java names).

CI runs the SASL_SSL case (SASL and TLS together, the one production uses); the SASL_PLAINTEXT
case differs only in the listener and the client's protocol, and is a long test
(``./run_tests.sh --full``: a broker and a Flink job of its own, about a minute)."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import uuid

import pytest

from harness.kafka import make_topics, running_broker, topics_for
from harness.ports import free_port
from harness.scripts import ROOT
from pipelines.monitor import topic_messages
from tests.integration.faults import archived_uuids, running_stream_job, stream_args, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

COUNT = 300


def _tls_files(directory) -> tuple[str, str]:
  """A throwaway CA (ca.pem) and a broker certificate for 127.0.0.1 signed by it, with its
  key, as the PEM keystore Kafka reads (server.pem): (CA path, keystore path)."""
  def openssl(*args):
    subprocess.run(['openssl', *args], cwd=directory, check=True, capture_output=True)
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=test-ca',
          '-keyout', 'ca.key', '-out', 'ca.pem')
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1',
          '-keyout', 'server.key', '-out', 'server.csr')
  (directory / 'san.ext').write_text('subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n')
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
          '-CAcreateserial', '-days', '2', '-extfile', 'san.ext', '-out', 'server.crt')
  keystore = directory / 'server.pem'
  keystore.write_bytes((directory / 'server.key').read_bytes() +
                       (directory / 'server.crt').read_bytes())
  return str(directory / 'ca.pem'), str(keystore)


def _files_containing(root: str, needle: bytes) -> list[str]:
  hits = []
  for folder, _, files in os.walk(root):
    for name in files:
      with open(os.path.join(folder, name), 'rb') as f:
        if needle in f.read():
          hits.append(os.path.join(folder, name))
  return hits


@pytest.mark.parametrize('protocol', [
    # Long: it differs from SASL_SSL only in the listener and the client's protocol.
    pytest.param('SASL_PLAINTEXT', marks=pytest.mark.long),
    'SASL_SSL'])
def test_sasl_credentials_from_the_environment_are_never_logged(protocol, synthetic_model_dir,
                                                                tmp_path, caplog, capfd,
                                                                monkeypatch):
  password = f'pw-{secrets.token_hex(12)}'
  sasl_port = free_port()
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  output = str(tmp_path / 'out')
  broker_env = {'KAFKA_SASL_USERS': f'detector:{password}'}
  producer_tls, consumer_tls = {}, ''
  if protocol == 'SASL_SSL':
    ca, keystore = _tls_files(tmp_path)
    broker_env.update(KAFKA_SASL_SSL_PORT=str(sasl_port), KAFKA_SSL_KEYSTORE_PEM=keystore)
    producer_tls = {'KAFKA_PRODUCER_SSL_CA_LOCATION': ca}
    consumer_tls = f'ssl.truststore.type=PEM\nssl.truststore.location={ca}\n'
  else:
    broker_env['KAFKA_SASL_PORT'] = str(sasl_port)
  with running_broker(run_dir=str(tmp_path / 'kafka'), extra_env=broker_env) as broker:
    make_topics(broker.bootstrap, topics.values())
    sasl = f'127.0.0.1:{sasl_port}'

    # The generator: settings and password from KAFKA_PRODUCER_* variables.
    env = dict(os.environ, KAFKA_PRODUCER_SECURITY_PROTOCOL=protocol,
               KAFKA_PRODUCER_SASL_MECHANISM='PLAIN', KAFKA_PRODUCER_SASL_USERNAME='detector',
               KAFKA_PRODUCER_SASL_PASSWORD=password, **producer_tls)
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
    if protocol == 'SASL_SSL':
      # TLS is really verified: without the test CA the broker's certificate is refused.
      untrusted = subprocess.run(
          command[:-1] + ['--count', '1', '--flush_timeout_s', '8'], cwd=ROOT,
          env={k: v for k, v in env.items() if k != 'KAFKA_PRODUCER_SSL_CA_LOCATION'},
          capture_output=True, text=True, timeout=60, check=False)
      assert untrusted.returncode != 0

    # The stream job: protocol and mechanism from the properties file, the JAAS line (with the
    # password) from the environment.
    properties = tmp_path / 'kafka.properties'
    properties.write_text(f'security.protocol={protocol}\nsasl.mechanism=PLAIN\n{consumer_tls}')
    monkeypatch.setenv('KAFKA_CLIENT_SASL_JAAS_CONFIG',
                       'org.apache.kafka.common.security.plain.PlainLoginModule required '
                       f'username="detector" password="{password}";')
    caplog.set_level(logging.INFO)
    alerts_topic = f'alerts_{suffix}'
    make_topics(broker.bootstrap, [alerts_topic])
    args = stream_args(sasl, topics, output, synthetic_model_dir, '[local]',
                       f'--kafka_config_file={properties}', f'--job_name=sasl-{suffix}',
                       f'--alerts_topic={alerts_topic}')
    with running_stream_job(args):
      wait_until(lambda: len(archived_uuids(output)) >= COUNT, 120, 'every record archived')
      # The alerts went out through the SASL listener too: published from the Python workers
      # with the settings translated for librdkafka (counted here on the plain listener).
      wait_until(lambda: topic_messages(broker.bootstrap, [alerts_topic])[alerts_topic] > 0,
                 60, 'alerts published over SASL')
    published = topic_messages(broker.bootstrap, [alerts_topic])[alerts_topic]
  console = capfd.readouterr()
  logs = caplog.text
  print(f'[accounting] {protocol}: sent {COUNT}, archived {len(archived_uuids(output))}, '
        f'{published} alerts published; '
        f'{len(logs.splitlines())} log lines and {len(console.out + console.err)} console '
        'characters checked')
  assert len(archived_uuids(output)) == COUNT
  # Not vacuous: the Kafka clients in Flink dumped their config, SASL settings included, into
  # the very logs checked here; kafka-clients masks the JAAS line itself.
  assert 'sasl.jaas.config = [hidden]' in logs and 'sasl.mechanism = PLAIN' in logs
  assert f'security.protocol = {protocol}' in logs
  for text in (logs, console.out, console.err):
    assert password not in text
  assert not _files_containing(output, password.encode()), 'the password in an output file'
