"""Object storage for every path option (``--output``, ``--input``, ``--model_dir``, reports).

All file I/O in the project goes through Beam's ``FileSystems``, so ``s3://bucket/...`` and
``gs://bucket/...`` work wherever a local path does. What they need is configuration, and
Beam takes it from one process-wide place: ``FileSystems.set_options(options)``. ``Pipeline()``
sets it in the launching process and Beam's SDK worker sets it on remote workers (both from
the pipeline options), but code that touches storage *before* a pipeline exists (resolving
``--input``, reading the registry, the dashboard, the monitor) finds nothing there, and Beam's
S3 filesystem then fails with ``ValueError: Must provide one of client or options``. Every
entry point therefore calls :func:`configure` first.

S3 settings, in the order boto3 resolves them (Beam passes only the options that are set):

* Beam's own flags (``S3Options``): ``--s3_endpoint_url``, ``--s3_region_name``,
  ``--s3_access_key_id``, ``--s3_secret_access_key``, ``--s3_session_token``, ``--s3_verify``,
  ``--s3_disable_ssl``. Flags travel inside the pipeline options to every worker, which makes
  them visible wherever the options are (job server, Flink UI, and the log line in which each
  Beam SDK worker prints all pipeline options): keep secrets out of them.
* The standard AWS environment: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``),
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_CA_BUNDLE``,
  ``AWS_PROFILE`` and ``~/.aws/``; it must be set where the workers run, too.

GCS (``gs://``) uses Google's application-default credentials (``gcloud auth
application-default login``, ``GOOGLE_APPLICATION_CREDENTIALS``, or the VM's account).
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, Mapping, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

log = logging.getLogger(__name__)
_warned: list[bool] = []  # warn once per process, not at every configure()
_FALSE = {'false', 'no', 'off', '0'}
_TRUE = {'true', 'yes', 'on', '1'}
S3_FLAGS = ('s3_access_key_id', 's3_secret_access_key', 's3_session_token', 's3_endpoint_url',
            's3_region_name', 's3_api_version', 's3_verify', 's3_disable_ssl')


def configure(options: PipelineOptions) -> PipelineOptions:
  """Makes ``options`` the file systems' configuration in this process; returns them."""
  s3 = options.view_as(S3Options)
  # Beam hands --s3_verify to boto3 as given: the string "false" would be read as the path of a
  # CA bundle. Booleans are what the flag means; anything else stays a CA bundle path. (A False
  # does not survive the trip to an SDK worker process: Beam's from_dictionary drops it.)
  if isinstance(s3.s3_verify, str):
    word = s3.s3_verify.strip().lower()
    if word in _FALSE:
      s3.s3_verify = False
    elif word in _TRUE:
      s3.s3_verify = None  # boto3's default: verify
  if (s3.s3_secret_access_key or s3.s3_session_token) and not _warned:
    _warned.append(True)
    # Seen with Beam 2.77 on Flink: every Python SDK worker logs all pipeline options at start
    # (sdk_worker_main, "Pipeline_options: {...}"), and the runner's log keeps that line.
    log.warning('--s3_secret_access_key / --s3_session_token are pipeline options: Beam\'s SDK '
                'workers log all pipeline options, so they reach the worker and Flink logs. '
                'Pass them as AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN instead.')
  FileSystems.set_options(options)
  return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Beam's S3 flags, for the tools with their own argparse parser (dashboard, monitor)."""
  group = parser.add_argument_group(
      'S3 (Beam\'s S3Options; unset ones come from the AWS_* environment)')
  S3Options._add_argparse_args(group)  # pylint: disable=protected-access


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
  """The S3 flags of an argparse namespace (see :func:`add_arguments`) as pipeline options."""
  values = {k: getattr(args, k) for k in S3_FLAGS if getattr(args, k, None) not in (None, False)}
  return PipelineOptions.from_dictionary(values)


def describe(options: PipelineOptions, environ: Optional[Mapping[str, str]] = None) -> str:
  """Where S3 requests go and where their credentials come from, for logs: never a secret."""
  environ = os.environ if environ is None else environ
  s3 = options.view_as(S3Options)
  endpoint = (s3.s3_endpoint_url or environ.get('AWS_ENDPOINT_URL_S3')
              or environ.get('AWS_ENDPOINT_URL') or 'AWS default')
  region = s3.s3_region_name or environ.get('AWS_DEFAULT_REGION') or 'default'
  if s3.s3_access_key_id:
    credentials = 'from --s3_access_key_id/--s3_secret_access_key'
  elif environ.get('AWS_ACCESS_KEY_ID'):
    credentials = 'from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY'
  else:
    credentials = "boto3's default chain (profile, instance role)"
  return f'S3 endpoint {endpoint}, region {region}, credentials {credentials}'


def uses_s3(*paths: Any) -> bool:
  return any(isinstance(p, str) and p.startswith('s3://') for p in paths)
