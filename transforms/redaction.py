"""Secrets redaction, the one definition: which setting names are secret, how a value is
masked, and how secret values are scrubbed out of text.

Used by everything that prints a Kafka client config, pipeline options or an error that may
quote one: the stream job's Kafka settings (pipelines/kafka_config.py), the SDK worker's
options log line (pipelines/sdk_worker.py), the traffic generator (pipelines/generate.py) and
the dashboard (dashboard/sources.py, pipelines/dashboard.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

MASK = '***'

# A setting or option whose name holds one of these (any case) has a secret value: Kafka's
# sasl.password, sasl.jaas.config, ssl.key.password, ssl.keystore.key, ...; Beam's
# s3_secret_access_key, s3_access_key_id, s3_session_token, ...
SECRET_WORDS = ('password', 'secret', 'jaas', 'token', 'credential', 'key')

# Pipeline options whose value is a list of ``key=value`` Kafka settings (--kafka_config).
PAIR_OPTIONS = ('kafka_config',)

# Shorter values are not scrubbed out of text: they would mask ordinary words.
MIN_SCRUBBED_LENGTH = 3


def is_secret(name: str) -> bool:
  """Whether the setting or option called ``name`` holds a secret."""
  lowered = name.lower()
  return any(word in lowered for word in SECRET_WORDS)


def mask(name: str, value: Any) -> Any:
  """``value``, or :data:`MASK` when ``name`` is secret and the value is set."""
  return MASK if value not in (None, '') and is_secret(name) else value


def redact_config(config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """A copy of a client config that is safe to print: secret values masked, callbacks (a
  librdkafka ``error_cb``, a logger) left out."""
  return {k: mask(k, v) for k, v in (config or {}).items() if not callable(v)}


def redact_pair(pair: Any) -> str:
  """``'key=value'`` with the value masked when the key is secret; something that is not a
  pair is masked whole (it may be a secret typed without its key)."""
  key, sep, value = str(pair).partition('=')
  return f'{key}={mask(key, value)}' if sep else MASK


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
  """Pipeline options (``{name: value}``) safe to print: secret values masked, and in the
  ``key=value`` lists of :data:`PAIR_OPTIONS` each secret value masked."""
  out = {}
  for name, value in options.items():
    if name in PAIR_OPTIONS and isinstance(value, (list, tuple)):
      out[name] = [redact_pair(p) for p in value]
    elif name in PAIR_OPTIONS and isinstance(value, str):
      out[name] = redact_pair(value)
    else:
      out[name] = mask(name, value)
  return out


def secret_values(config: Optional[Mapping[str, Any]]) -> list[str]:
  """The values of ``config``'s secret settings worth scrubbing, longest first (so that a
  secret containing another is replaced whole)."""
  values = {str(v) for k, v in (config or {}).items()
            if not callable(v) and is_secret(k) and v not in (None, '')}
  return sorted((v for v in values if len(v) >= MIN_SCRUBBED_LENGTH), key=len, reverse=True)


def scrub(text: Any, config: Optional[Mapping[str, Any]]) -> str:
  """``text`` (an error message, a log line) with every secret value of ``config`` masked."""
  out = str(text)
  for value in secret_values(config):
    out = out.replace(value, MASK)
  return out
