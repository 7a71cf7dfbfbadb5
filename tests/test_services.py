"""pipelines/services.py: the job server and expansion service kept running across jobs."""

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import runners, services
from pipelines.stream import StreamOptions


def test_the_flags_it_prints_are_what_a_job_reads():
  flags = services.job_flags(8099, 8097, 8081)
  options = PipelineOptions(['--runner=FlinkRunner', '--flink_master=[local]', *flags])
  assert options.view_as(StreamOptions).expansion_service == 'localhost:8097'
  assert runners.flink_rest_url(options) == 'http://127.0.0.1:8081'
  # A job given --job_endpoint starts no job server of its own.
  with runners.job_server(['--runner=FlinkRunner', '--flink_master=[local]', *flags]) as args:
    assert args.count('--job_endpoint=localhost:8099') == 1
