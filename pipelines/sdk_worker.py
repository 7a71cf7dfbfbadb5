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

What the job staged (``--setup_file``: ``workflow.tar.gz``, ``--requirements_file``,
``--extra_package``) is fetched from the artifact service and installed, as Beam's container
boot does, but into a folder of its own (``pip install --target``, once per set of artifacts
and host, shared by the workers), put first on the worker's ``sys.path``: the submitted
code is what runs, over the environment the worker's Python has (the project's dependencies
must be installed there: ``pip install .`` on every TaskManager host, or the pool's venv).
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import hashlib
import logging
import os
import subprocess
import sys
from typing import Optional

import grpc
from google.protobuf import json_format, text_format

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_artifact_api_pb2, beam_artifact_api_pb2_grpc
from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc
from apache_beam.portability.api import beam_runner_api_pb2, endpoints_pb2
from apache_beam.runners.portability.stager import (EXTRA_PACKAGES_FILE, REQUIREMENTS_FILE,
                                                    WORKFLOW_TARBALL_FILE)
from apache_beam.runners.worker import sdk_worker_main, statesampler

from pipelines import scratch, stage_cpu
from pipelines.startup import StartupTimeline
from transforms import fn_data
from transforms.redaction import redact_options


def _descriptor(url: str) -> str:
  return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))


def provision_info(endpoint: str, worker_id: str):
  with grpc.insecure_channel(endpoint) as channel:
    stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
    return stub.GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(),
                                 metadata=[('worker_id', worker_id)], timeout=60).info


def worker_environment(args: argparse.Namespace, scratch_folder: str) -> dict[str, str]:
  """The environment Beam's ``sdk_worker_main`` reads its set-up from; its semi-persistent
  folder (where Beam would load a pickled main session from) is ``scratch_folder``."""
  info = provision_info(args.provision_endpoint, args.id)
  env = {
      'WORKER_ID': args.id,
      'PIPELINE_OPTIONS': json_format.MessageToJson(info.pipeline_options),
      'CONTROL_API_SERVICE_DESCRIPTOR': _descriptor(
          info.control_endpoint.url or args.control_endpoint),
      'LOGGING_API_SERVICE_DESCRIPTOR': _descriptor(
          info.logging_endpoint.url or args.logging_endpoint),
      'SEMI_PERSISTENT_DIRECTORY': scratch_folder,
      'RUNNER_CAPABILITIES': ' '.join(info.runner_capabilities),
  }
  if info.HasField('status_endpoint'):
    env['STATUS_API_SERVICE_DESCRIPTOR'] = _descriptor(info.status_endpoint.url)
  return env


# Set in the worker re-started over its staged packages, so that it does not install them again.
_STAGED_ENV = 'ATTACK_DETECTION_STAGED_SITE'
_LOG = logging.getLogger('pipelines.sdk_worker')


def staged_names(info) -> dict[str, beam_runner_api_pb2.ArtifactInformation]:
  """The job's staged files by name (``workflow.tar.gz``, ``requirements.txt``, ...)."""
  staged = {}
  for artifact in info.dependencies:
    if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
      name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
          artifact.role_payload).staged_name
      staged[name] = artifact
  return staged


def _fetch(stub, artifact, path: str) -> None:
  with open(path, 'wb') as f:
    for chunk in stub.GetArtifact(beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact)):
      f.write(chunk.data)


def install_staged(info, artifact_endpoint: str, cache_root: Optional[str] = None) -> Optional[str]:
  """Installs what the job staged into a folder of its own and returns it, or None when it
  staged no package. The folder is keyed by the artifacts (their content hashes), so the
  workers of one job on one host install once, under a lock, and later ones reuse it. It is
  in the user's private scratch folder (pipelines/scratch.py), never at a path of the shared
  temporary folder, where another user could plant packages for the worker to import."""
  staged = staged_names(info)
  packages = [n for n in staged if n in (WORKFLOW_TARBALL_FILE, REQUIREMENTS_FILE,
                                           EXTRA_PACKAGES_FILE)]
  if not packages or not artifact_endpoint:
    return None
  key = hashlib.sha256(b''.join(staged[n].SerializeToString() for n in sorted(staged)))
  root = scratch.staged_folder(key.hexdigest()[:16], cache_root)
  site, files, done = os.path.join(root, 'site'), os.path.join(root, 'files'), os.path.join(
      root, '.installed')
  os.makedirs(files, exist_ok=True)
  with open(os.path.join(root, '.lock'), 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.utime(lock.fileno())  # used now: scratch.sweep keeps it
    if os.path.exists(done):
      return site
    with grpc.insecure_channel(artifact_endpoint) as channel:
      stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
      for name, artifact in staged.items():
        _fetch(stub, artifact, os.path.join(files, name))
    pip = [sys.executable, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
           '--target', site, '--find-links', files]
    steps = []
    if REQUIREMENTS_FILE in staged:
      steps.append([*pip, '-r', os.path.join(files, REQUIREMENTS_FILE)])
    if EXTRA_PACKAGES_FILE in staged:
      with open(os.path.join(files, EXTRA_PACKAGES_FILE), encoding='utf-8') as f:
        extra = [os.path.join(files, line.strip()) for line in f if line.strip()]
      if extra:
        steps.append([*pip, '--no-deps', *extra])
    if WORKFLOW_TARBALL_FILE in staged:
      # The job's own package; its dependencies are the worker environment's.
      steps.append([*pip, '--no-deps', os.path.join(files, WORKFLOW_TARBALL_FILE)])
    for step in steps:
      _LOG.info('installing staged packages: %s', ' '.join(step[4:]))
      subprocess.run(step, check=True, stdout=sys.stderr)
    with open(done, 'w', encoding='utf-8'):
      pass
  return site


class RedactOptions(logging.Filter):
  """Beam's worker logs every pipeline option when it starts (``Pipeline_options: {...}``),
  into the runner's log: secrets given as flags would be written there in clear."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.msg == 'Pipeline_options: %s' and record.args:
      options = record.args[0] if isinstance(record.args, tuple) else record.args
      record.args = (redact_options(dict(options)),)
    return True


class StartupLine(logging.Filter):
  """Logs the worker's startup phases, one line, when Beam's harness says it starts: the
  first record that reaches the runner's log (its log handler is set up just before)."""

  HARNESS_STARTING = 'Python sdk harness starting.'

  def __init__(self, worker_id: str, timeline: StartupTimeline):
    super().__init__()
    self.worker_id, self.timeline = worker_id, timeline

  def filter(self, record: logging.LogRecord) -> bool:
    if record.msg == self.HARNESS_STARTING and not self.timeline.logged:
      self.timeline.logged = True
      self.timeline.mark('harness')
      phases = ', '.join(f'{name} {seconds:.1f} s' for name, seconds in self.timeline.phases())
      total = self.timeline.marks[-1][1] - self.timeline.started
      _LOG.info('SDK worker %s started in %.1f s: %s', self.worker_id, total, phases)
    return True


# Python's collector runs a young collection every 700 new container objects. A worker's batches
# are columns of thousands of records (a tuple per record while they are parsed, lists per
# field), nearly all of them garbage at the end of the bundle, so with the default the collector
# walked them, and everything they promoted, dozens of times a batch (its share of a scoring
# worker's CPU: benchmarks/README.md, "Where the time goes now").
GC_THRESHOLDS = (20_000, 20, 50)


def collect_garbage_less_often() -> None:
  """Freezes what the worker has loaded so far (Beam, the project, a fork server's preloads:
  never garbage) out of every later collection, and collects young objects less often."""
  gc.freeze()
  gc.set_threshold(*GC_THRESHOLDS)


# Beam times each bundle's steps with a sampler thread per bundle, which sleeps in growing steps
# (from a hundredth of its period, 1.2x each time) up to its period, 200 ms by default. The
# bundle's end joins that thread, so it waits for the sleep under way to end (tens of ms a
# bundle), while the runner holds the bundle open and, on Flink, the task's checkpoint lock
# (its Kafka source stops). A shorter period bounds that wait; the sampler wakes
# a few dozen times a second instead of five (benchmarks/README.md, "Bundles end without waiting
# for Beam's state sampler").
STATE_SAMPLING_PERIOD_MS = 20


def sample_states_with_a_shorter_period() -> bool:
  """Makes Beam's StateSampler default to :data:`STATE_SAMPLING_PERIOD_MS`; False (and a
  warning) where its constructor no longer has the default this expects."""
  init = statesampler.StateSampler.__init__
  if init.__defaults__ != (statesampler.DEFAULT_SAMPLING_PERIOD_MS,):
    _LOG.warning('Beam\'s StateSampler has no sampling_period_ms default of %s ms here; its '
                 'bundles keep their own sampling period', statesampler.DEFAULT_SAMPLING_PERIOD_MS)
    return False
  init.__defaults__ = (STATE_SAMPLING_PERIOD_MS,)
  return True


def tune_interpreter() -> None:
  """What every worker process sets before its harness starts: the collector's thresholds,
  the state sampler's period, and output to the runner sent by whole elements
  (transforms/fn_data.py) in every stage of the process, not only those that read Kafka."""
  collect_garbage_less_often()
  sample_states_with_a_shorter_period()
  fn_data.install()


def main(argv=None, started: Optional[float] = None,
         first_phase: str = 'python start and imports') -> None:
  """Boots the worker for ``argv`` (sys.argv's by default). A worker forked from the fork
  server (pipelines/fork_server.py) counts from its launcher's start (``started``), its
  first phase being the launcher and the fork instead of the interpreter's start."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog='scripts/sdk_worker.sh', description=__doc__.split('\n\n')[0])
  parser.add_argument('--id', required=True)
  parser.add_argument('--provision_endpoint', required=True)
  parser.add_argument('--control_endpoint', default='')
  parser.add_argument('--logging_endpoint', default='')
  parser.add_argument('--artifact_endpoint', default='')
  parser.add_argument('--semi_persist_dir', default=None)
  args, _ = parser.parse_known_args(argv)
  # From the process's start: a worker re-started over its staged packages keeps its pid.
  timeline = StartupTimeline(started)
  timeline.mark(first_phase)
  if args.semi_persist_dir:
    folder = args.semi_persist_dir
  elif os.environ.get(_STAGED_ENV):  # re-started over its staged packages: the same folder
    folder = os.environ['SEMI_PERSISTENT_DIRECTORY']
  else:
    folder = scratch.process_folder('sdk-worker')
  os.environ.update(worker_environment(args, folder))
  timeline.mark('provision')
  if not os.environ.get(_STAGED_ENV):
    site = install_staged(provision_info(args.provision_endpoint, args.id), args.artifact_endpoint)
    timeline.mark('staged packages')
    if site:
      # A fresh interpreter over the staged packages: this one has imported the installed
      # project's modules already, and those would shadow the staged ones.
      env = dict(os.environ, **{_STAGED_ENV: site})
      env['PYTHONPATH'] = os.pathsep.join(p for p in (site, env.get('PYTHONPATH')) if p)
      os.execve(sys.executable, [sys.executable, '-m', 'pipelines.sdk_worker', *argv], env)
  logging.getLogger(sdk_worker_main.__name__).addFilter(RedactOptions())
  logging.getLogger(sdk_worker_main.__name__).addFilter(StartupLine(args.id, timeline))
  tune_interpreter()
  stage_cpu.install_from_environment()
  sdk_worker_main.main([sys.argv[0], *argv])


if __name__ == '__main__':
  main()
