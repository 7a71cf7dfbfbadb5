"""An S3-compatible object store (MinIO, ``scripts/s3_server.sh``) on a free port, with fresh
credentials (test-only)."""

from __future__ import annotations

import os
from typing import Optional

import boto3

from harness.ports import free_port
from harness.scripts import run_script


class S3Server:
  """MinIO in ``run_dir``: its endpoint and credentials. :meth:`start` builds MinIO first if
  the cache has none (needs Go: RuntimeError saying 'go not found' without it)."""

  def __init__(self, run_dir: str, access_key: str = 'it-access',
               secret_key: Optional[str] = None):
    self.port = free_port()
    self.endpoint = f'http://127.0.0.1:{self.port}'
    self.access_key = access_key
    self.secret_key = secret_key or f'it-{os.urandom(8).hex()}'
    self.region = 'us-east-1'
    self._env = dict(os.environ, S3_PORT=str(self.port), S3_RUN_DIR=run_dir,
                     S3_ACCESS_KEY=self.access_key, S3_SECRET_KEY=self.secret_key)

  def start(self) -> 'S3Server':
    run_script('s3_server.sh', 'start', self._env, timeout=900)
    return self

  def stop(self) -> None:
    run_script('s3_server.sh', 'stop', self._env, timeout=60)

  def flags(self) -> list[str]:
    """Beam's own S3 options, as the jobs take them on the command line."""
    return [f'--s3_endpoint_url={self.endpoint}', f'--s3_access_key_id={self.access_key}',
            f'--s3_secret_access_key={self.secret_key}', f'--s3_region_name={self.region}']

  def env(self) -> dict[str, str]:
    """The standard AWS environment boto3 reads when no flag is given."""
    return {'AWS_ENDPOINT_URL': self.endpoint, 'AWS_ACCESS_KEY_ID': self.access_key,
            'AWS_SECRET_ACCESS_KEY': self.secret_key, 'AWS_DEFAULT_REGION': self.region}

  def client(self):
    return boto3.client('s3', endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                        aws_secret_access_key=self.secret_key, region_name=self.region)

  def make_bucket(self, name: str) -> str:
    self.client().create_bucket(Bucket=name)
    return name
