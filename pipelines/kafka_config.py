"""Kafka client settings for the stream job, from a properties file, the environment and flags.

Precedence, lowest first: ``--kafka_config_file`` (Java properties), environment variables
``KAFKA_CLIENT_<KEY>`` (``KAFKA_CLIENT_SASL_JAAS_CONFIG`` is ``sasl.jaas.config``), then
``--kafka_config key=value`` flags. Secrets belong in the file or the environment: command lines
show up in process listings and in the Flink UI. Nothing here logs a value; use
:func:`transforms.kafka_io.redact_config` to print a config.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

ENV_PREFIX = 'KAFKA_CLIENT_'


class KafkaConfigError(ValueError):
  pass


def parse_properties(text: str, source: str = 'properties') -> dict[str, str]:
  """``key=value`` / ``key: value`` lines; ``#`` and ``!`` start comments."""
  config = {}
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line[0] in '#!':
      continue
    separators = [i for i in (line.find('='), line.find(':')) if i > 0]
    if not separators:
      # Never echo the line: it may hold a secret.
      raise KafkaConfigError(f'{source}:{number}: expected key=value')
    cut = min(separators)
    config[line[:cut].strip()] = line[cut + 1:].strip()
  return config


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
  config = {}
  for pair in pairs:
    key, sep, value = pair.partition('=')
    if not sep or not key.strip():
      # Never echo the argument: it may be a secret typed without its key.
      raise KafkaConfigError('--kafka_config wants key=value with a non-empty key')
    config[key.strip()] = value
  return config


def from_environment(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, str]:
  return {name[len(prefix):].lower().replace('_', '.'): value
          for name, value in environ.items() if name.startswith(prefix)}


def client_config(pairs: Sequence[str] = (), config_file: Optional[str] = None,
                  environ: Optional[Mapping[str, str]] = None,
                  env_prefix: str = ENV_PREFIX) -> dict[str, str]:
  """The merged Kafka client settings (without bootstrap.servers, which has its own flag)."""
  config = {}
  if config_file:
    try:
      with open(config_file, encoding='utf-8') as f:
        config.update(parse_properties(f.read(), config_file))
    except OSError as e:
      raise KafkaConfigError(f'cannot read --kafka_config_file {config_file}: {e.strerror}') from None
  config.update(from_environment(os.environ if environ is None else environ, env_prefix))
  config.update(parse_pairs(pairs))
  return config
