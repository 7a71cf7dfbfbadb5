"""A Python SDK worker for Beam's PROCESS environment: what Beam's Docker image's ``boot`` does,
without Docker.

Flink starts ``scripts/sdk_worker.sh`` (which runs this module with the project's Python) once
per SDK worker, with the endpoints of the job's Fn API services::

    sdk_worker.sh --id=1-1 --provision_endpoint=localhost:40123 --control_endpoint=... \\
        --logging_endpoint=... --artifact_endpoint=... [--semi_persist_dir=...]

It asks the provision service for the job's pipeline options and hands over to Beam's own
``sdk_worker_main`` (with secret option values masked in the one log line that prints them),
which sets the file systems' options (S3 endpoints and credentials) and
pickler from them. Each worker is a process of its own, so the job's Python work is spread
over cores instead of sharing one interpreter lock, as LOOPBACK's in-process workers do.
Packages are not staged: the workers run in the environment the project is installed in,
which on a Flink cluster means installing it on every TaskManager host.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format, text_format

from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
from apache_beam.portability.api import endpoints_pb2
from apache_beam.runners.worker import sdk_worker_main

from transforms.redaction import redact_options


def _descriptor(url: str) -> str:
  return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))


def provision_info(endpoint: str, worker_id: str):
  with grpc.insecure_channel(endpoint) as channel:
    stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
    return stub.GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(),
                                 metadata=[('worker_id', worker_id)], timeout=60).info


def worker_environment(args: argparse.Namespace) -> dict[str, str]:
  """The environment Beam's ``sdk_worker_main`` reads its set-up from."""
  info = provision_info(args.provision_endpoint, args.id)
  env = {
      'WORKER_ID': args.id,
      'PIPELINE_OPTIONS': json_format.MessageToJson(info.pipeline_options),
      'CONTROL_API_SERVICE_DESCRIPTOR': _descriptor(
          info.control_endpoint.url or args.control_endpoint),
      'LOGGING_API_SERVICE_DESCRIPTOR': _descriptor(
          info.logging_endpoint.url or args.logging_endpoint),
      'SEMI_PERSISTENT_DIRECTORY': args.semi_persist_dir or tempfile.mkdtemp(prefix='beam-sdk-'),
      'RUNNER_CAPABILITIES': ' '.join(info.runner_capabilities),
  }
  if info.HasField('status_endpoint'):
    env['STATUS_API_SERVICE_DESCRIPTOR'] = _descriptor(info.status_endpoint.url)
  return env


class RedactOptions(logging.Filter):
  """Beam's worker logs every pipeline option when it starts (``Pipeline_options: {...}``),
  into the runner's log: secrets given as flags would be written there in clear."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.msg == 'Pipeline_options: %s' and record.args:
      options = record.args[0] if isinstance(record.args, tuple) else record.args
      record.args = (redact_options(dict(options)),)
    return True


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='scripts/sdk_worker.sh', description=__doc__.split('\n\n')[0])
  parser.add_argument('--id', required=True)
  parser.add_argument('--provision_endpoint', required=True)
  parser.add_argument('--control_endpoint', default='')
  parser.add_argument('--logging_endpoint', default='')
  parser.add_argument('--artifact_endpoint', default='')
  parser.add_argument('--semi_persist_dir', default=None)
  args, _ = parser.parse_known_args(argv)
  os.environ.update(worker_environment(args))
  logging.getLogger(sdk_worker_main.__name__).addFilter(RedactOptions())
  sdk_worker_main.main(sys.argv)


if __name__ == '__main__':
  main()
