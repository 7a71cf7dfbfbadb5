"""Flags shared by several jobs, defined once.

Beam parses the flags of every ``PipelineOptions`` subclass loaded in a process with one
parser, so two jobs that each defined ``--model_dir`` could not be imported together; each job
reads shared flags through its own options view instead.
"""

import contextlib
import json
import os
import sys
from typing import Iterator, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions


SDK_WORKER_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'sdk_worker.sh')


class ModelRegistryOptions(PipelineOptions):
  """Where the detectors' models live (see model/registry.py)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--model_dir', default='models',
                        help='Model registry root: a local path, s3://... or gs://... '
                        '(default: %(default)s).')
    parser.add_argument('--model_public_key', default=None,
                        help='PEM file of the public key(s) whose signatures on model '
                        'manifests are trusted; a file may hold several during a key rotation. '
                        'Read where the job is launched; workers get the keys with the '
                        'pipeline (default: $ATTACK_DETECTION_MODEL_PUBLIC_KEY, else '
                        '~/.config/attack-detection/model-signing.pub; see '
                        'docs/model-registry.md).')


def is_flink(options: PipelineOptions) -> bool:
  return (options.view_as(StandardOptions).runner or '').lower() in ('flinkrunner', 'flink')


def with_flink_defaults(argv: Sequence[str]) -> list[str]:
  """``--runner=FlinkRunner`` alone runs here: the pinned job server jar and Flink version,
  and Python SDK workers as local processes (PROCESS with scripts/sdk_worker.sh, two per
  core), unless the command line says otherwise. Without these Beam would download a job
  server and ask Docker for the harness. Raises FileNotFoundError (saying how to fetch it)
  when the pinned jar is missing."""
  argv = list(argv)
  if not is_flink(PipelineOptions(argv)):
    return argv
  given = {a.split('=', 1)[0] for a in argv if a.startswith('--')}
  from transforms import kafka_io
  defaults = {
      '--flink_job_server_jar': kafka_io.flink_job_server_jar,
      '--flink_version': lambda: kafka_io.FLINK_VERSION,
      '--environment_type': lambda: 'PROCESS',
  }
  argv += [f'{flag}={value()}' for flag, value in defaults.items() if flag not in given]
  environment = PipelineOptions(argv).view_as(PortableOptions).environment_type
  if environment == 'PROCESS' and not {'--environment_options', '--environment_config'} & given:
    # Worker processes instead of LOOPBACK's threads of this process, which share one
    # interpreter lock: its Python work never uses more than one core.
    os.environ.setdefault('BEAM_SDK_PYTHON', sys.executable)
    # The JSON form: --environment_options would reach the Java expansion service too, whose
    # (EMBEDDED) environment refuses a process_command.
    argv.append('--environment_config=' + json.dumps({'command': SDK_WORKER_SCRIPT}))
    if '--sdk_worker_parallelism' not in given:
      # Flink hands its Python operator instances to the workers round-robin, in the order they
      # open, which is not stable: with one worker per core the busy scoring stage's instances
      # were seen sharing one worker while another served only the light file writers. Two
      # per core spread them (an idle worker costs memory, ~250 MB, not CPU).
      argv.append(f'--sdk_worker_parallelism={2 * (os.cpu_count() or 1)}')
  return argv


@contextlib.contextmanager
def own_flink_job_server(argv: Sequence[str]) -> Iterator[list[str]]:
  """``argv`` plus ``--job_endpoint`` of a job server of our own for the span of a ``with``
  block, when it runs on Flink without one (else ``argv`` unchanged). Ours listens on loopback
  only and stops with the block; Beam's own binds all interfaces and can outlive the run (see
  :func:`transforms.kafka_io.flink_job_server`)."""
  argv = list(argv)
  options = PipelineOptions(argv)
  if not is_flink(options) or options.view_as(PortableOptions).job_endpoint:
    yield argv
    return
  from transforms import kafka_io  # pylint: disable=import-outside-toplevel
  with kafka_io.flink_job_server(argv) as with_endpoint:
    yield with_endpoint
