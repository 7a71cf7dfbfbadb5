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


# A client.properties as Kafka's documentation writes it: the JAAS line continued with
# backslashes, the three separators, escapes and both comment markers.
JAAS_PROPERTIES = r'''# SASL over TLS
! the broker's CA
security.protocol SASL_SSL
sasl.mechanism:SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
    username="detector" \
    password="p=ss:w\\rd #1";
ssl.truststore.location = /etc/kafka/ca\u002epem
ssl.endpoint.identification.algorithm=
  # an indented comment
client.id\=odd = a\ value\ with\ spaces
'''


def test_java_properties_as_java_reads_them(tmp_path):
  path = tmp_path / 'client.properties'
  path.write_text(JAAS_PROPERTIES)
  assert client_config([], str(path), environ={}) == {
      'security.protocol': 'SASL_SSL',
      'sasl.mechanism': 'SCRAM-SHA-512',
      # One value: the continuation lines joined, their leading blanks dropped, \\ -> \.
      'sasl.jaas.config': 'org.apache.kafka.common.security.scram.ScramLoginModule required '
                          'username="detector" password="p=ss:w\\rd #1";',
      'ssl.truststore.location': '/etc/kafka/ca.pem',
      'ssl.endpoint.identification.algorithm': '',  # empty on purpose: no host name check
      'client.id=odd': 'a value with spaces',
  }


@pytest.mark.parametrize('text, line', [
    ('security.protocol=SSL\nhunter2-secret\n', 2),
    ('a=1\nb=\\\n  2\n# c\nhunter2-secret   \n', 5),  # after a continued value and a comment
    ('sasl.jaas.config=x password="hunter2-\\u00zz"\n', 1),  # a broken \u escape
])
def test_bad_lines_name_their_line_not_their_text(tmp_path, text, line):
  path = tmp_path / 'bad.properties'
  path.write_text(text)
  with pytest.raises(KafkaConfigError) as error:
    client_config([], str(path), environ={})
  assert 'hunter2' not in str(error.value)
  assert f'bad.properties:{line}:' in str(error.value)
