"""Flags shared by several jobs, defined once, and the ``--help`` every job prints.

Beam parses the flags of every ``PipelineOptions`` subclass loaded in a process with one
parser, so two jobs that each defined ``--model_dir`` could not be imported together; each job
reads shared flags through its own options view instead.
"""

import argparse
from typing import Sequence, Tuple, Type

from apache_beam.options.pipeline_options import (FlinkRunnerOptions, PipelineOptions,
                                                  PortableOptions, S3Options, SetupOptions,
                                                  StandardOptions)


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


# Beam's option groups that matter for running any of the jobs, in the order --help lists them;
# a job adds its own (e.g. Kafka) after the portability group.
_BEAM_RUNNER_GROUPS = (('Beam: runner', StandardOptions), ('Beam: Flink', FlinkRunnerOptions),
                       ('Beam: portability', PortableOptions))
_BEAM_OTHER_GROUPS = (('Beam: S3 (unset ones come from the AWS_* environment)', S3Options),
                      ('Beam: packaging', SetupOptions))


def help_parser(prog: str, usage: str, description: str,
                job_options: Sequence[Type[PipelineOptions]],
                beam_groups: Sequence[Tuple[str, Type[PipelineOptions]]] = ()
                ) -> argparse.ArgumentParser:
  """The parser behind a job's ``--help``: the job's own flags (``job_options``, then
  :class:`ModelRegistryOptions`), then the Beam flags that matter for running it (the runner,
  Flink, portability, ``beam_groups``, S3, packaging). Only for printing: Beam parses the real
  command line."""
  parser = argparse.ArgumentParser(
      prog=prog, usage=usage, description=description,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='Any other Beam pipeline option is accepted too (see Beam\'s documentation).')
  for options in (*job_options, ModelRegistryOptions):
    options._add_argparse_args(parser)  # pylint: disable=protected-access
  for title, options in (*_BEAM_RUNNER_GROUPS, *beam_groups, *_BEAM_OTHER_GROUPS):
    options._add_argparse_args(parser.add_argument_group(title))  # pylint: disable=protected-access
  return parser
