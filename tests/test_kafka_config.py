"""Kafka client settings: file < environment < flags, and no secret in any error message."""

import pytest

from pipelines.kafka_config import KafkaConfigError, client_config


def test_file_environment_and_flags_merge_in_that_order(tmp_path):
  path = tmp_path / 'client.properties'
  path.write_text('# TLS + SASL\nsecurity.protocol=SASL_SSL\nsasl.mechanism: PLAIN\n'
                  'sasl.jaas.config=org.apache.kafka...PlainLoginModule required password="s3";\n')
  config = client_config(['sasl.mechanism=SCRAM-SHA-512'], str(path),
                         environ={'KAFKA_CLIENT_SSL_TRUSTSTORE_LOCATION': '/etc/ca.pem',
                                  'KAFKA_CLIENT_SECURITY_PROTOCOL': 'SSL', 'OTHER': 'x'})
  assert config == {
      'security.protocol': 'SSL',  # the environment beats the file
      'sasl.mechanism': 'SCRAM-SHA-512',  # a flag beats both
      'sasl.jaas.config': 'org.apache.kafka...PlainLoginModule required password="s3";',
      'ssl.truststore.location': '/etc/ca.pem',
  }


def test_errors_never_show_the_value(tmp_path):
  path = tmp_path / 'bad.properties'
  path.write_text('hunter2-without-a-key\n')
  with pytest.raises(KafkaConfigError) as error:
    client_config([], str(path), environ={})
  assert 'hunter2' not in str(error.value) and 'bad.properties:1' in str(error.value)
  with pytest.raises(KafkaConfigError) as error:
    client_config(['hunter2'], None, environ={})
  assert 'hunter2' not in str(error.value)
  with pytest.raises(KafkaConfigError, match='cannot read --kafka_config_file'):
    client_config([], str(tmp_path / 'missing.properties'), environ={})
