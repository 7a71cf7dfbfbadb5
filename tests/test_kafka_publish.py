"""The Java -> librdkafka translation of the job's Kafka settings, and which producer a job
publishes with (transforms/kafka_publish.py). The real producer against a real broker: the
stream job's integration tests (tests/integration/), SASL_SSL in test_sasl.py."""

from __future__ import annotations

import apache_beam as beam
import pytest

from pipelines import stream
from transforms import kafka_io, kafka_publish
from transforms.kafka_publish import UntranslatableConfig, librdkafka_config

PLAIN = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
         'username="detector" password="s3cr\\"et;pw";')


def test_sasl_ssl_with_a_pem_trust_store():
  config = librdkafka_config({
      'bootstrap.servers': 'b:9093', 'security.protocol': 'SASL_SSL', 'sasl.mechanism': 'PLAIN',
      'sasl.jaas.config': PLAIN, 'ssl.truststore.type': 'PEM',
      'ssl.truststore.location': '/etc/ca.pem'})
  assert config == {
      'bootstrap.servers': 'b:9093', 'security.protocol': 'SASL_SSL', 'sasl.mechanism': 'PLAIN',
      'sasl.username': 'detector', 'sasl.password': 's3cr"et;pw',
      'ssl.ca.location': '/etc/ca.pem',
      'linger.ms': '5', 'enable.idempotence': 'true', 'delivery.timeout.ms': '120000'}


def test_scram_and_bare_jaas_values():
  config = librdkafka_config({'sasl.mechanism': 'SCRAM-SHA-512', 'sasl.jaas.config': (
      'org.apache.kafka.common.security.scram.ScramLoginModule required\n'
      '    username=detector\n    password="pw";')})
  assert (config['sasl.username'], config['sasl.password']) == ('detector', 'pw')


def test_producer_tuning_passes_and_the_java_defaults_can_be_overridden():
  config = librdkafka_config({'acks': '1', 'linger.ms': '0', 'compression.type': 'zstd',
                              'max.request.size': '2000000', 'send.buffer.bytes': '65536',
                              'ssl.endpoint.identification.algorithm': ''})
  assert config['acks'] == '1' and config['linger.ms'] == '0'
  assert config['compression.type'] == 'zstd' and config['message.max.bytes'] == '2000000'
  assert config['socket.send.buffer.bytes'] == '65536'
  assert config['ssl.endpoint.identification.algorithm'] == 'none'


def test_librdkafka_takes_every_setting_the_translation_gives():
  """A real producer is made from them (librdkafka checks names and values at creation;
  nothing connects before a message is sent)."""
  from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel
  config = librdkafka_config({
      'bootstrap.servers': '127.0.0.1:1', 'security.protocol': 'SASL_PLAINTEXT',
      'sasl.mechanism': 'SCRAM-SHA-256', 'sasl.jaas.config': PLAIN, 'client.id': 'detector',
      'acks': 'all', 'compression.type': 'lz4', 'linger.ms': '2', 'batch.size': '65536',
      'retries': '5', 'retry.backoff.ms': '200', 'request.timeout.ms': '20000',
      'delivery.timeout.ms': '60000', 'enable.idempotence': 'false',
      'max.in.flight.requests.per.connection': '5', 'ssl.cipher.suites': 'ECDHE-RSA-AES128-GCM-SHA256',
      'socket.connection.setup.timeout.ms': '10000', 'reconnect.backoff.ms': '100',
      'reconnect.backoff.max.ms': '1000', 'metadata.max.age.ms': '60000',
      'send.buffer.bytes': '131072', 'receive.buffer.bytes': '131072',
      'max.request.size': '2000000', 'ssl.endpoint.identification.algorithm': 'https',
      'group.id': 'g'})
  Producer(config).flush(0)


def test_the_readers_own_settings_are_left_out():
  config = librdkafka_config({'group.id': 'g', 'auto.offset.reset': 'earliest',
                              'max.poll.records': '500', 'isolation.level': 'read_committed'})
  assert not {'group.id', 'auto.offset.reset', 'max.poll.records', 'isolation.level'} & set(config)


def test_key_stores():
  pem = librdkafka_config({'ssl.keystore.type': 'PEM', 'ssl.keystore.location': '/k.pem',
                           'ssl.key.password': 'kp'})
  assert pem['ssl.certificate.location'] == pem['ssl.key.location'] == '/k.pem'
  assert pem['ssl.key.password'] == 'kp'
  inline = librdkafka_config({'ssl.keystore.type': 'PEM', 'ssl.keystore.key': 'KEY',
                              'ssl.keystore.certificate.chain': 'CHAIN',
                              'ssl.truststore.type': 'pem', 'ssl.truststore.certificates': 'CA'})
  assert (inline['ssl.key.pem'], inline['ssl.certificate.pem'], inline['ssl.ca.pem']) == (
      'KEY', 'CHAIN', 'CA')
  pkcs12 = librdkafka_config({'ssl.keystore.type': 'PKCS12', 'ssl.keystore.location': '/k.p12',
                              'ssl.keystore.password': 'pw'})
  assert (pkcs12['ssl.keystore.location'], pkcs12['ssl.keystore.password']) == ('/k.p12', 'pw')


@pytest.mark.parametrize('java, named', [
    # Java's own store formats (JKS is the default type: the settings given are named).
    ({'ssl.truststore.location': '/t.jks', 'ssl.truststore.password': 'pw'},
     'ssl.truststore.location, ssl.truststore.password (no ssl.truststore.type: a JKS store'),
    ({'ssl.truststore.type': 'PKCS12', 'ssl.truststore.location': '/t.p12'},
     'ssl.truststore.type'),
    ({'ssl.keystore.location': '/k.jks'},
     "ssl.keystore.location (no ssl.keystore.type: a JKS store, Java's default; librdkafka "
     'reads PEM or PKCS12)'),
    ({'ssl.keystore.type': 'PEM', 'ssl.keystore.password': 'pw'}, 'ssl.keystore.password'),
    # Login modules that are more than a user name and a password.
    ({'sasl.jaas.config': 'com.sun.security.auth.module.Krb5LoginModule required '
                          'useKeyTab=true keyTab="/k.keytab" principal="d@R";'},
     'sasl.jaas.config'),
    ({'sasl.jaas.config': 'org.apache.kafka.common.security.plain.PlainLoginModule required '
                          'username="d" password="p" user_admin="x";'}, 'sasl.jaas.config'),
    ({'sasl.jaas.config': 'not a jaas line'}, 'sasl.jaas.config'),
    ({'ssl.enabled.protocols': 'TLSv1.3'}, 'ssl.enabled.protocols'),
    ({'sasl.login.callback.handler.class': 'x.Handler'}, 'sasl.login.callback.handler.class'),
    ({'sasl.mechanism': 'GSSAPI'}, 'sasl.mechanism'),
    ({'sasl.mechanism': 'OAUTHBEARER'}, 'sasl.mechanism'),
    # librdkafka's own names are not the job's (its reader is the Java client).
    ({'sasl.username': 'detector', 'sasl.password': 'pw'}, 'sasl.password'),
])
def test_settings_without_an_equivalent_are_named_never_their_values(java, named):
  with pytest.raises(UntranslatableConfig) as refused:
    librdkafka_config(java)
  assert named in str(refused.value)
  for value in java.values():
    assert value not in str(refused.value)


def test_the_job_refuses_at_launch_what_librdkafka_cannot_take(tmp_path):
  properties = tmp_path / 'kafka.properties'
  properties.write_text('ssl.truststore.location=/t.jks\nssl.truststore.password=hunter22\n')
  opts = beam.options.pipeline_options.PipelineOptions(
      [f'--kafka_config_file={properties}']).view_as(stream.StreamOptions)
  with pytest.raises(SystemExit) as stopped:
    stream.publisher(opts)
  message = str(stopped.value)
  assert ('ssl.truststore.location, ssl.truststore.password (no ssl.truststore.type: a JKS '
          'store') in message
  assert '--kafka_producer=java' in message and 'hunter22' not in message
  assert 'hunter22' not in message
  opts.kafka_producer = kafka_publish.JAVA
  assert stream.publisher(opts) is not None  # KafkaIO's writer takes any Java setting


def test_python_publishing_is_a_python_dofn_and_java_a_kafkaio_transform():
  python = kafka_io.PublishToKafka('b:9092', 'alerts', {'sasl.jaas.config': PLAIN})
  pipeline = beam.Pipeline()
  _ = pipeline | beam.Create([(b'k', b'v')]) | python
  transforms = [t.transform for t in pipeline._current_transform().parts[-1].parts]  # pylint: disable=protected-access
  assert any(isinstance(getattr(t, 'fn', None), kafka_publish.PublishFn) for t in transforms)
  assert 'detector' not in repr(python) and 's3cr' not in repr(python)
  with pytest.raises(UntranslatableConfig):
    kafka_io.PublishToKafka('b:9092', 'alerts', {'ssl.truststore.location': '/t.jks'})
  java = kafka_io.PublishToKafka('b:9092', 'alerts', {'ssl.truststore.location': '/t.jks'},
                                 producer=kafka_publish.JAVA)
  assert java._config['ssl.truststore.location'] == '/t.jks'  # pylint: disable=protected-access
  with pytest.raises(ValueError):
    kafka_io.PublishToKafka('b:9092', 'alerts', producer='go')
