"""Publishing to Kafka from the Python workers: librdkafka, no Java stage.

Alerts and incidents are made in the Python SDK workers. Published through KafkaIO's Java
writer, each one crossed the Fn API into the Flink JVM and waited there for a Java stage's own
bundle, and that stage (with the Java SDK harness it needs) cost the JVM CPU and JIT work at
every start (benchmarks/README.md, "Alerts published from the Python workers").
:class:`PublishFn` produces them where they are made, with confluent-kafka's librdkafka
producer: sent within ``linger.ms`` (5 ms), flushed before the bundle commits. Delivery is at least once, as with
KafkaIO's writer: a bundle whose messages are not all acknowledged fails and is retried.

The job's Kafka settings are Java client settings (pipelines/kafka_config.py: the reader is
KafkaIO either way). :func:`librdkafka_config` translates the ones librdkafka has an
equivalent for (SASL PLAIN and SCRAM with their JAAS line, PEM and PKCS#12 key material, the
producer's tuning) and names the others: a setting with no equivalent (JKS trust stores,
Kerberos, OAuth) stops the job at launch, and ``--kafka_producer=java`` publishes through
KafkaIO's writer instead.
No value is ever logged or put in an error message.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Mapping, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics.metric import Metrics

log = logging.getLogger(__name__)

PYTHON, JAVA = 'python', 'java'
PRODUCERS = (PYTHON, JAVA)

# Java client settings that mean the same to librdkafka under the same name.
_SAME = frozenset((
    'bootstrap.servers', 'security.protocol', 'client.id', 'acks',
    'compression.type', 'linger.ms', 'batch.size', 'retries', 'retry.backoff.ms',
    'request.timeout.ms', 'delivery.timeout.ms', 'enable.idempotence',
    'max.in.flight.requests.per.connection', 'ssl.key.password', 'ssl.cipher.suites',
    'socket.connection.setup.timeout.ms', 'reconnect.backoff.ms', 'reconnect.backoff.max.ms',
    'metadata.max.age.ms'))
# The SASL mechanisms whose login is a user name and a password (a JAAS line, below).
_PASSWORD_MECHANISMS = frozenset(('PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'))
_RENAMED = {'send.buffer.bytes': 'socket.send.buffer.bytes',
            'receive.buffer.bytes': 'socket.receive.buffer.bytes',
            'max.request.size': 'message.max.bytes'}
# The job's settings serve its Kafka reader too: what only a consumer (or only the Java
# client's serialisers) reads means nothing to this producer.
_CONSUMER_ONLY = frozenset((
    'group.id', 'group.instance.id', 'auto.offset.reset', 'enable.auto.commit',
    'auto.commit.interval.ms', 'isolation.level', 'max.poll.records', 'max.poll.interval.ms',
    'fetch.min.bytes', 'fetch.max.bytes', 'fetch.max.wait.ms', 'max.partition.fetch.bytes',
    'session.timeout.ms', 'heartbeat.interval.ms', 'partition.assignment.strategy',
    'client.rack', 'check.crcs', 'key.deserializer', 'value.deserializer', 'key.serializer',
    'value.serializer', 'exclude.internal.topics', 'allow.auto.create.topics'))
# Where the Java client's default differs from librdkafka's, Java's (the job's settings are
# Java's). Except linger.ms (Java's is 0): 5 ms gathers a bundle's alerts into a few requests
# instead of one each, and the bundle's end sends what is left at once.
DEFAULT_LINGER_MS = 5
_DEFAULTS = {'enable.idempotence': 'true', 'delivery.timeout.ms': '120000',
             'linger.ms': str(DEFAULT_LINGER_MS)}
# The JAAS modules whose whole content is a user name and a password.
_PASSWORD_MODULES = ('PlainLoginModule', 'ScramLoginModule')
_JAAS = re.compile(r'\s*(?P<module>[\w.$]+)\s+(?:required|requisite|sufficient|optional)'
                   r'(?P<options>.*?);?\s*', re.DOTALL)
_JAAS_OPTION = re.compile(r'\s*(?P<name>\w+)\s*=\s*(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|'
                          r'(?P<bare>[^\s";]+))', re.DOTALL)


class UntranslatableConfig(ValueError):
  """Java client settings librdkafka has no equivalent for (named, never their values)."""


def librdkafka_config(java: Mapping[str, str]) -> dict[str, str]:
  """The librdkafka producer settings equal to the Java client settings ``java``; raises
  :class:`UntranslatableConfig` naming every setting that has no equivalent.

  >>> librdkafka_config({'bootstrap.servers': 'b:9092', 'security.protocol': 'SASL_SSL',
  ...     'sasl.mechanism': 'PLAIN', 'ssl.truststore.type': 'PEM',
  ...     'ssl.truststore.location': '/ca.pem', 'group.id': 'g',
  ...     'sasl.jaas.config': 'org.apache.kafka.common.security.plain.PlainLoginModule '
  ...                         'required username="u" password="p";'})['ssl.ca.location']
  '/ca.pem'
  """
  config = dict(_DEFAULTS)
  refused = []
  ssl = {k: v for k, v in java.items() if k.startswith(('ssl.truststore.', 'ssl.keystore.'))}
  for key, value in java.items():
    if key in _SAME:
      config[key] = value
    elif key in _RENAMED:
      config[_RENAMED[key]] = value
    elif key == 'sasl.mechanism':
      # Kerberos and OAuth log in through Java's own machinery (JAAS, callback classes).
      if value.upper() in _PASSWORD_MECHANISMS:
        config[key] = value
      else:
        refused.append(key)
    elif key == 'sasl.jaas.config':
      credentials = _jaas_credentials(value)
      if credentials is None:
        refused.append(key)
      else:
        config['sasl.username'], config['sasl.password'] = credentials
    elif key == 'ssl.endpoint.identification.algorithm':
      # Java turns host name checking off with an empty value, librdkafka with "none".
      config[key] = value or 'none'
    elif key not in _CONSUMER_ONLY and key not in ssl:
      refused.append(key)
  stores, store_refused = _key_material(ssl)
  config.update(stores)
  refused += store_refused
  if refused:
    raise UntranslatableConfig(
        f'librdkafka has no equivalent for the Kafka client setting(s) {", ".join(sorted(refused))}')
  return config


def _jaas_credentials(line: str) -> Optional[Tuple[str, str]]:
  """(user name, password) of a PLAIN or SCRAM JAAS line; None for any other module, or for
  options besides those two."""
  match = _JAAS.fullmatch(line)
  if not match or not match['module'].endswith(_PASSWORD_MODULES):
    return None
  options, rest = {}, match['options']
  for option in _JAAS_OPTION.finditer(rest):
    quoted = option['quoted']
    options[option['name']] = (re.sub(r'\\(.)', r'\1', quoted) if quoted is not None
                               else option['bare'])
  if set(options) != {'username', 'password'} or _JAAS_OPTION.sub('', rest).strip():
    return None
  return options['username'], options['password']


# (store, its ssl.<store>.type) -> {the rest of a Java setting's name: librdkafka's setting(s)}.
# Any other type (JKS, Java's default, or a PKCS#12 trust store) is Java's own.
_STORES = {
    ('truststore', 'PEM'): {'location': ('ssl.ca.location',), 'certificates': ('ssl.ca.pem',)},
    # A PEM key store is one file holding the key and its certificate chain.
    ('keystore', 'PEM'): {'location': ('ssl.certificate.location', 'ssl.key.location'),
                          'key': ('ssl.key.pem',),
                          'certificate.chain': ('ssl.certificate.pem',)},
    ('keystore', 'PKCS12'): {'location': ('ssl.keystore.location',),
                             'password': ('ssl.keystore.password',)},
}


def _key_material(ssl: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
  """The trust and key stores of the Java settings ``ssl`` (``ssl.truststore.*``,
  ``ssl.keystore.*``) as librdkafka settings, and the settings that have no equivalent (a
  store of a type librdkafka cannot read is named by its type setting, or, when the type is
  not given, by the settings given, as a JKS store)."""
  config, refused = {}, set()
  for store in ('truststore', 'keystore'):
    prefix = f'ssl.{store}.'
    store_type = ssl.get(f'{prefix}type')
    known = _STORES.get((store, (store_type or 'JKS').upper()))
    of_a_jks_store = []
    for key, value in ssl.items():
      if not key.startswith(prefix) or key == f'{prefix}type':
        continue
      names = (known or {}).get(key[len(prefix):])
      if names is not None:
        config.update(dict.fromkeys(names, value))
      elif known:
        refused.add(key)
      elif store_type:
        refused.add(f'{prefix}type')
      else:
        of_a_jks_store.append(key)
    if of_a_jks_store:
      readable = ' or '.join(kind for of, kind in _STORES if of == store)
      refused.add(f'{", ".join(sorted(of_a_jks_store))} (no {prefix}type: a JKS store, '
                  f'Java\'s default; librdkafka reads {readable})')
  return config, sorted(refused)


class KafkaPublishError(RuntimeError):
  pass


_PRODUCERS: dict = {}  # this process's librdkafka producers, one per distinct config
_PRODUCERS_LOCK = threading.Lock()


def _shared_producer(config: Mapping[str, str]):
  """The process's producer for ``config``: every publishing stage of a worker shares it (one
  set of broker connections and librdkafka threads, not one per stage and topic)."""
  key = tuple(sorted(config.items()))
  with _PRODUCERS_LOCK:
    producer = _PRODUCERS.get(key)
    if producer is None:
      from confluent_kafka import Producer  # pylint: disable=import-outside-toplevel
      producer = _PRODUCERS[key] = Producer({**config, 'logger': log})
    return producer


class PublishFn(beam.DoFn):
  """``(key bytes, value bytes)`` -> one message each on ``topic``, e.g.
  ``(b'4b1d...-alert-id', b'{"kind": "network_anomaly", ...}')``.

  Each message is handed to the worker's producer as it comes (librdkafka sends within
  ``linger.ms``), and ``finish_bundle`` waits until the broker acknowledged them all (or
  ``delivery.timeout.ms`` passed: then the bundle fails, and is retried)."""

  def __init__(self, topic: str, config: Mapping[str, str]):
    self._topic = topic
    self._config = dict(config)  # librdkafka settings: secrets among them, never logged
    self._published = Metrics.counter('kafka', 'messages_published')

  def __repr__(self):
    return f'PublishFn(topic={self._topic!r})'

  def setup(self):
    self._producer = _shared_producer(self._config)
    # Delivery reports run in whichever thread polls the shared producer (another stage's
    # flush, too): counted under a lock, and a bundle waits for its own.
    self._lock = threading.Lock()
    self._pending = 0
    self._delivered = 0
    self._failures = []

  def process(self, element):
    key, value = element
    while True:
      try:
        self._producer.produce(self._topic, value=value, key=key, on_delivery=self._report)
        break
      except BufferError:
        # librdkafka's queue is full (the broker slow or away): wait for deliveries.
        self._producer.poll(0.1)
    with self._lock:  # its report may already have run (and counted it down)
      self._pending += 1

  def _report(self, error, _message):
    with self._lock:
      self._pending -= 1
      if error is None:
        self._delivered += 1
      else:
        self._failures.append(error)

  def finish_bundle(self):
    undelivered = self._producer.flush()
    # flush() returns once every message is acknowledged or failed; their reports may still
    # be running in another thread.
    while not undelivered and self._pending:
      self._producer.poll(0.01)
    with self._lock:
      failures, self._failures = self._failures, []
      delivered, self._delivered = self._delivered, 0
    self._published.inc(delivered)
    if undelivered or failures:
      raise KafkaPublishError(
          f'{len(failures) + undelivered} message(s) to {self._topic} not acknowledged'
          + (f'; first error: {failures[0]}' if failures else ''))

  def teardown(self):
    producer = getattr(self, '_producer', None)
    if producer is not None:
      producer.flush(10)
