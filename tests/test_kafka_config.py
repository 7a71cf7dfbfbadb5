"""Kafka client settings: file < environment < flags, and no secret in any error message,
log line or pipeline option."""

import json
import logging

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from google.protobuf import json_format

from pipelines import stream as stream_job
from pipelines.dashboard import kafka_client_config
from pipelines import kafka_config
from pipelines.kafka_config import KafkaConfigError, client_config
from tests.factories import network_record
from tests.helpers import read_output
from transforms.redaction import redact_config, redact_options, scrub

SECRET = 'hunter2-' + 'kafka-secret'


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


def test_a_secret_flag_is_warned_about_by_name_only(caplog, monkeypatch):
  # Warnings are once per key and process: earlier tests of the session may have given these.
  monkeypatch.setattr(kafka_config, '_warned', set())
  caplog.set_level(logging.WARNING, logger='pipelines.kafka_config')
  pairs = [f'sasl.jaas.config=PlainLoginModule required password="{SECRET}";',
           'security.protocol=SASL_SSL', 'ssl.truststore.password=' + SECRET]
  config = client_config(pairs, None, environ={})
  assert SECRET in config['sasl.jaas.config']  # passed through to Kafka untouched
  [warning] = [r.getMessage() for r in caplog.records]
  assert 'sasl.jaas.config' in warning and 'ssl.truststore.password' in warning
  assert 'security.protocol' not in warning and SECRET not in warning
  assert redact_config(config) == {'sasl.jaas.config': '***', 'security.protocol': 'SASL_SSL',
                                   'ssl.truststore.password': '***'}


def test_the_secret_flag_warning_names_the_prefix_of_the_program_that_warns(caplog):
  """The dashboard reads DASHBOARD_KAFKA_<KEY>, not the stream job's KAFKA_CLIENT_<KEY>."""
  caplog.set_level(logging.WARNING, logger='pipelines.kafka_config')
  kafka_client_config(['sasl.oauthbearer.client.secret=' + SECRET], None, environ={})
  [warning] = [r.getMessage() for r in caplog.records]
  assert 'DASHBOARD_KAFKA_<KEY>' in warning and 'KAFKA_CLIENT_' not in warning
  assert SECRET not in warning


def test_redaction_masks_secret_values_options_and_text():
  config = {'sasl.password': 'hunter2-pass', 'security.protocol': 'SASL_SSL',
            'ssl.keystore.key': 'pem-key', 'sasl.username': 'me', 'error_cb': print}
  assert redact_config(config) == {'sasl.password': '***', 'security.protocol': 'SASL_SSL',
                                   'ssl.keystore.key': '***', 'sasl.username': 'me'}
  assert scrub('bad "hunter2-pass" and pem-key for me', config) == 'bad "***" and *** for me'
  options = redact_options({'s3_secret_access_key': 's', 's3_session_token': None,
                            'kafka_config': ['security.protocol=SSL', 'sasl.password=p'],
                            'runner': 'FlinkRunner'})
  assert options == {'s3_secret_access_key': '***', 's3_session_token': None,
                     'kafka_config': ['security.protocol=SSL', 'sasl.password=***'],
                     'runner': 'FlinkRunner'}


def _secret_job_args(model_dir, tmp_path, *extra):
  inputs = tmp_path / 'in'
  inputs.mkdir()
  (inputs / 'network.jsonl').write_text(
      ''.join(json.dumps(network_record(i)) + '\n' for i in range(5)))
  return [
      '--source=files', f'--input_dir={inputs}', f'--output={tmp_path / "out"}',
      f'--model_dir={model_dir}',
      '--max_event_age_s=0',  # the factory's records are from 2023
      f'--kafka_config=sasl.jaas.config=PlainLoginModule required password="{SECRET}";',
      f'--kafka_config=sasl.password={SECRET}', *extra]


def test_a_secret_flag_stays_out_of_the_job_logs(model_dir, tmp_path, caplog, capfd):
  """A DirectRunner run given --kafka_config secrets: no log line and no console output
  holds them."""
  caplog.set_level(logging.DEBUG)
  stream_job.submit(PipelineOptions(_secret_job_args(model_dir, tmp_path))).wait_until_finish()
  assert len(read_output(str(tmp_path / 'out'), 'archive/network')) == 5
  logged = '\n'.join(r.getMessage() for r in caplog.records)
  assert logged, 'nothing was logged: the check would be empty'
  assert SECRET not in logged
  out, err = capfd.readouterr()
  assert SECRET not in out and SECRET not in err


def test_a_secret_flag_stays_out_of_the_options_workers_are_provisioned_with(model_dir,
                                                                             tmp_path):
  """The same job through Beam's own portable job service (in process): the options it
  provisions its SDK workers with no longer carry the flag. (On Flink the same is checked by
  asking the job server's provision service: tests/integration/test_network_exposure.py.)"""
  result = stream_job.submit(PipelineOptions(_secret_job_args(
      model_dir, tmp_path, '--runner=PortableRunner', '--job_endpoint=embed',
      '--environment_type=LOOPBACK', '--job_name=secret-options')))
  result.wait_until_finish()
  assert len(read_output(str(tmp_path / 'out'), 'archive/network')) == 5
  # pylint: disable-next=protected-access
  job = result._job_service._jobs[result._job_id]
  provisioned = json_format.MessageToJson(
      job._provision_info.provision_info.pipeline_options)  # pylint: disable=protected-access
  assert 'secret-options' in provisioned, 'not the options of this job'
  assert SECRET not in provisioned and 'kafka_config' not in provisioned
