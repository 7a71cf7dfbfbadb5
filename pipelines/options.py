"""Flags shared by several jobs, defined once.

Beam parses the flags of every ``PipelineOptions`` subclass loaded in a process with one
parser, so two jobs that each defined ``--model_dir`` could not be imported together; each job
reads shared flags through its own options view instead.
"""

from apache_beam.options.pipeline_options import PipelineOptions


class ModelRegistryOptions(PipelineOptions):
  """Where the detectors' models live (see model/registry.py)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument('--model_dir', default='models',
                        help='Model registry root: a local path, s3://... or gs://... '
                        '(default: %(default)s).')
