"""Flags shared by several jobs, defined once.

Beam parses the flags of every ``PipelineOptions`` subclass loaded in a process with one
parser, so two jobs that each defined ``--model_dir`` could not be imported together; each job
reads shared flags through its own options view instead.
"""

from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions


class ModelRegistryOptions(PipelineOptions):
  """Where the detectors' models live (see model/registry.py)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--model_dir', default='models',
                        help='Model registry root: a local path, s3://... or gs://... '
                        '(default: %(default)s).')


def is_flink(options: PipelineOptions) -> bool:
  return (options.view_as(StandardOptions).runner or '').lower() in ('flinkrunner', 'flink')


def with_flink_defaults(argv: Sequence[str]) -> list[str]:
  """``--runner=FlinkRunner`` alone runs here: the pinned job server jar and Flink version,
  and the Python harness in this process (LOOPBACK), unless the command line says otherwise.
  Without these Beam would download a job server and ask Docker for the harness. Raises
  FileNotFoundError (saying how to fetch it) when the pinned jar is missing."""
  argv = list(argv)
  if not is_flink(PipelineOptions(argv)):
    return argv
  given = {a.split('=', 1)[0] for a in argv if a.startswith('--')}
  from transforms import kafka_io
  defaults = {
      '--flink_job_server_jar': kafka_io.flink_job_server_jar,
      '--flink_version': lambda: kafka_io.FLINK_VERSION,
      '--environment_type': lambda: 'LOOPBACK',
  }
  return argv + [f'{flag}={value()}' for flag, value in defaults.items() if flag not in given]
