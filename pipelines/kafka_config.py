"""Kafka client settings for the stream job, from a properties file, the environment and flags.

Precedence, lowest first: ``--kafka_config_file`` (Java properties), environment variables
``KAFKA_CLIENT_<KEY>`` (``KAFKA_CLIENT_SASL_JAAS_CONFIG`` is ``sasl.jaas.config``), then
``--kafka_config key=value`` flags. Secrets belong in the file or the environment: command lines
show up in process listings, and a flag given to the stream job would travel in its pipeline
options (which Beam's SDK workers log) unless the job removes it (pipelines/stream.py does).
Nothing here logs a value; use :func:`redact_config` (transforms/redaction.py) to print a
config. The dashboard (``DASHBOARD_KAFKA_<KEY>``) and the generator (``KAFKA_PRODUCER_<KEY>``)
read their settings here too, each with its own prefix.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Mapping, Optional, Sequence

import javaproperties

from transforms.redaction import is_secret

ENV_PREFIX = 'KAFKA_CLIENT_'

log = logging.getLogger(__name__)
_warned: set[str] = set()  # keys already warned about in this process


class KafkaConfigError(ValueError):
  pass


# A key runs to its first unescaped separator (=, : or white space); a line that is all key
# has none.
_KEY_ONLY = re.compile(r'(?:\\.|[^\\=:\s])*', re.DOTALL)


def parse_properties(text: str, source: str = 'properties') -> dict[str, str]:
  """A Java ``.properties`` text, as ``java.util.Properties.load`` reads it (``javaproperties``):
  ``key=value``, ``key: value`` and ``key value`` lines, backslash continuations (the usual
  way to write a multi-line ``sasl.jaas.config``), escapes (``\\=``, ``\\uXXXX``) and ``#`` / ``!``
  comments. One departure: a line that is only a key (Java would give it an empty value) is
  refused, because it is more likely a secret written without its key."""
  config = {}
  line = 1
  try:
    for element in javaproperties.parse(text):
      if isinstance(element, javaproperties.KeyValue):
        raw = element.source.strip()
        if not element.value and _KEY_ONLY.fullmatch(raw):
          # Never echo the line: it may hold a secret.
          raise KafkaConfigError(f'{source}:{line}: expected key=value')
        config[element.key] = element.value
      line += element.source.count('\n')
  except javaproperties.InvalidUEscapeError:
    # Its message quotes the escape, a piece of the value.
    raise KafkaConfigError(f'{source}:{line}: invalid \\uXXXX escape') from None
  return config


def parse_pairs(pairs: Sequence[str], env_prefix: str = ENV_PREFIX) -> dict[str, str]:
  """``key=value`` flags -> settings; warns once per secret key given this way, naming the
  environment prefix of the program that reads them (``env_prefix``)."""
  config = {}
  for pair in pairs:
    key, sep, value = pair.partition('=')
    if not sep or not key.strip():
      # Never echo the argument: it may be a secret typed without its key.
      raise KafkaConfigError('--kafka_config wants key=value with a non-empty key')
    config[key.strip()] = value
  secret = sorted(k for k in config if is_secret(k) and k not in _warned)
  if secret:
    _warned.update(secret)
    log.warning('--kafka_config %s: a secret on the command line, which process listings show; '
                'pass it in --kafka_config_file or as %s<KEY> in the environment instead',
                ', '.join(secret), env_prefix)
  return config


def from_environment(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, str]:
  """Settings from ``<prefix><KEY>`` variables: ``<prefix>SASL_JAAS_CONFIG`` is
  ``sasl.jaas.config``."""
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
  config.update(parse_pairs(pairs, env_prefix))
  return config
