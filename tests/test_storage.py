"""Object-storage plumbing without a server: how the S3 options are configured and described,
gs:// path handling, and that readers skip the sink's in-progress files. The S3 round trips
are in tests/integration/test_object_storage.py (a real MinIO)."""

from __future__ import annotations

import datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from model.dataset import archive_table
from pipelines.bootstrap import synthetic_frames
from pipelines import monitor, retrain_input, storage
from schemas import layout

SECRET = 'never-print-this-secret'


@pytest.fixture(autouse=True)
def restore_filesystem_options():
  before = FileSystems._pipeline_options  # pylint: disable=protected-access
  yield
  FileSystems.set_options(before)


@pytest.mark.parametrize('given, expected', [('false', False), ('False', False), ('0', False),
                                             ('true', None), ('/etc/ssl/ca.pem', '/etc/ssl/ca.pem'),
                                             (None, None)])
def test_configure_reads_s3_verify_as_boto3_means_it(given, expected):
  options = PipelineOptions([f'--s3_verify={given}'] if given else [])
  storage.configure(options)
  assert options.view_as(S3Options).s3_verify == expected
  # What the file systems use from now on, and what a pipeline would ship to its workers.
  assert FileSystems._pipeline_options is options  # pylint: disable=protected-access
  assert options.get_all_options()['s3_verify'] == expected


def test_describe_names_the_source_of_credentials_never_the_secret():
  flags = PipelineOptions(['--s3_endpoint_url=http://127.0.0.1:9000',
                           '--s3_access_key_id=AKID', f'--s3_secret_access_key={SECRET}'])
  text = storage.describe(flags, environ={})
  assert 'http://127.0.0.1:9000' in text and '--s3_access_key_id' in text
  assert SECRET not in text and 'AKID' not in text
  env = {'AWS_ENDPOINT_URL': 'http://minio:9000', 'AWS_ACCESS_KEY_ID': 'AKID',
         'AWS_SECRET_ACCESS_KEY': SECRET, 'AWS_DEFAULT_REGION': 'eu-west-1'}
  text = storage.describe(PipelineOptions([]), environ=env)
  assert 'http://minio:9000' in text and 'eu-west-1' in text and 'AWS_ACCESS_KEY_ID' in text
  assert SECRET not in text and 'AKID' not in text
  assert "default chain" in storage.describe(PipelineOptions([]), environ={})


def test_argparse_tools_take_beams_s3_flags():
  import argparse
  parser = argparse.ArgumentParser()
  storage.add_arguments(parser)
  args = parser.parse_args(['--s3_endpoint_url=http://127.0.0.1:9', '--s3_disable_ssl'])
  s3 = storage.options_from_args(args).view_as(S3Options)
  assert (s3.s3_endpoint_url, s3.s3_disable_ssl, s3.s3_access_key_id) == (
      'http://127.0.0.1:9', True, None)


def test_gs_and_s3_paths_are_handled_by_their_file_systems():
  # The gcp and aws extras are installed: both schemes resolve (no request is made here).
  from apache_beam.io.aws.s3filesystem import S3FileSystem
  from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem
  assert isinstance(FileSystems.get_filesystem('gs://bucket/models'), GCSFileSystem)
  assert isinstance(FileSystems.get_filesystem('s3://bucket/models'), S3FileSystem)
  # The registry's and the sink's path building keep the scheme and use '/'.
  assert FileSystems.join('gs://bucket/models/', 'network', '20261123T000000Z',
                          'manifest.json') == (
                              'gs://bucket/models/network/20261123T000000Z/manifest.json')
  assert FileSystems.join('gs://b/out', 'archive/network', 'dt=2026-11-23') == (
      'gs://b/out/archive/network/dt=2026-11-23')
  assert not layout.is_hidden('gs://b/out/archive/network/dt=2026-11-23/edge-1-000000-000.parquet')
  assert layout.is_hidden('s3://b/out/dt=2026-11-23/.edge-1-000000-000.parquet.inprogress')
  assert layout.is_hidden('s3://b/models/.staging/')


def _archive(path, n, start=0):
  frame = synthetic_frames(seed=0, network_rows=n + start, machines=2, seconds=10)['network']
  table = archive_table('network', frame.iloc[start:start + n],
                        start=datetime.datetime(2026, 11, 23, tzinfo=datetime.timezone.utc),
                        uuid_prefix=f'u{start}-')
  pq.write_table(table, str(path))
  return table


def test_retrain_reads_finished_files_only(tmp_path):
  """A glob such as dt=*/* also matches the stream's '.<name>.inprogress' files; retrain must
  not read one (half-written on a local disk; a duplicate on S3 between copy and delete)."""
  folder = tmp_path / 'archive' / 'network' / 'dt=2026-11-23'
  folder.mkdir(parents=True)
  _archive(folder / 'edge-a-000000-000.parquet', 30)
  (folder / '.edge-a-000001-000.parquet.inprogress').write_bytes(b'PAR1 half a file')
  pattern = str(tmp_path / 'archive' / 'network' / 'dt=*' / '*')
  assert retrain_input.resolve_input(pattern, 'network', 'auto') == (pattern, 'parquet')
  with TestPipeline() as pipeline:
    rows = (pipeline
            | retrain_input.ReadTrainingTables('network', pattern, 'parquet')
            | beam.Map(lambda table: table.num_rows)
            | beam.CombineGlobally(sum))
    assert_that(rows, equal_to([30]))


def test_monitor_counts_rows_through_beams_file_systems(tmp_path):
  folder = tmp_path / 'out' / 'alerts' / 'dt=2026-11-23'
  folder.mkdir(parents=True)
  now = datetime.datetime(2026, 11, 23, 12, tzinfo=datetime.timezone.utc)
  table = pa.table({'event_time': [now, now], 'processing_time': [
      now + datetime.timedelta(seconds=2), now + datetime.timedelta(seconds=4)]})
  pq.write_table(table, str(folder / 'edge-a-000000-000.parquet'))
  (folder / '.edge-a-000001-000.parquet.inprogress').write_bytes(b'half')
  output = str(tmp_path / 'out')
  assert monitor.parquet_rows(output, 'alerts') == 2
  assert monitor.parquet_rows(output, 'attacks') == 0
  latency = monitor.alert_latency(output)
  assert latency['p50'] == pytest.approx(3.0)


def test_a_secret_given_as_a_flag_is_warned_about_never_logged(caplog):
  storage._warned.clear()  # pylint: disable=protected-access
  storage.configure(PipelineOptions([f'--s3_secret_access_key={SECRET}']))
  assert 'AWS_SECRET_ACCESS_KEY' in caplog.text and SECRET not in caplog.text
