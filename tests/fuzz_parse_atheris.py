"""Coverage-guided fuzzing of every stage of the stream job with atheris (libFuzzer), a
complement to the hypothesis tests in ``tests/test_fuzz_parse.py``: those try the hostile
shapes we thought of, this one mutates real messages at random, guided by which branches of
routing, parsing, cleaning, enrichment and id derivation a mutation reaches.

    python -m tests.fuzz_parse_atheris -max_total_time=600       # ten minutes
    python -m tests.fuzz_parse_atheris -runs=5000 -timeout=5     # what the test suite runs

Any libFuzzer flag works; corpus directories may follow (default: .cache/fuzz/parse). An empty
first corpus is seeded with the generator's own messages of each stream, with event times of
now; libFuzzer adds every input that reaches new code to it.
The first input byte picks the stream (and, past the three streams, an unknown one or a Kafka
timestamp of -1), the rest is one message's value. Each input runs through
:func:`tests.test_fuzz_parse.run_stages` (route, parse, clean, enrich, and scoring with small
models published into a temporary registry at start) and the same property as the hypothesis
tests must hold: nothing raises, and the message ends up archived or dead-lettered exactly
once, record by record for host arrays. A violation stops the run with the input saved as
``crash-<sha1>`` (libFuzzer's reproducer: pass its path to rerun it); an input slower than
``-timeout`` seconds is saved as ``timeout-<sha1>``.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time

import atheris

# Only our stream code is instrumented: instrumenting Beam and pandas on import takes minutes.
with atheris.instrument_imports(include=['transforms.route', 'transforms.parse',
                                         'transforms.cleaning', 'transforms.enrich',
                                         'transforms.ids', 'transforms.dead_letter',
                                         'transforms.batch', 'schemas']):
  from schemas.records import SCHEMAS
  from transforms import enrich, ids, parse, route  # pylint: disable=unused-import

from model import signing
from tests.helpers import train_factory_models
from tests.fuzzing import BOUNDS, archived_rows, check, load_models, run_stages
from transforms.source import SourceMessage

STREAMS = sorted(SCHEMAS)
DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              '.cache', 'fuzz', 'parse')
_MODELS: dict = {}


def one_input(data: bytes) -> None:
  if not data:
    return
  choice = data[0] % (len(STREAMS) + 2)
  stream = STREAMS[choice % len(STREAMS)]
  timestamp_ms = -1 if choice == len(STREAMS) + 1 else int(time.time() * 1000)
  message = SourceMessage('dns' if choice == len(STREAMS) else stream, data[1:],
                          source=f'fuzz-{stream}', partition=0, offset=0,
                          timestamp_ms=timestamp_ms)
  before = datetime.datetime.now(datetime.timezone.utc)
  outcome = run_stages([message], _MODELS)
  after = datetime.datetime.now(datetime.timezone.utc)
  check([message], archived_rows(outcome), outcome.dead,
        (BOUNDS.window(before)[0], BOUNDS.window(after)[1]))


def _factory_registry() -> str:
  """A temporary registry of the test suite's small models, signed with the key pair the
  environment names (the test session's), else with one made for this run."""
  folder = tempfile.mkdtemp(prefix='fuzz-models-')
  if not os.environ.get(signing.SIGNING_KEY_ENV):
    private, public = os.path.join(folder, 'signing.key'), os.path.join(folder, 'signing.pub')
    signing.generate(private, public)
    os.environ[signing.SIGNING_KEY_ENV], os.environ[signing.PUBLIC_KEY_ENV] = private, public
  models = os.path.join(folder, 'models')
  train_factory_models(models)
  return models


def write_seed_corpus(directory: str, per_stream: int = 20) -> None:
  """The generator's messages (network records, host arrays), one file each."""
  from generator.source import SourceConfig, generate_messages
  for index, stream in enumerate(STREAMS):
    config = SourceConfig(streams=(stream,), count=per_stream, seed=index, machines=3,
                          duration_s=5, start_ms=int(time.time() * 1000) - 5000)
    for n, message in enumerate(generate_messages(config)):
      if n >= per_stream:
        break
      with open(os.path.join(directory, f'{stream}-{n}'), 'wb') as f:
        f.write(bytes([index]) + message.value)


def main(argv: list[str]) -> None:
  flags = [a for a in argv[1:] if a.startswith('-')]
  corpora = [a for a in argv[1:] if not a.startswith('-')]
  corpora = corpora or [DEFAULT_CORPUS]
  os.makedirs(corpora[0], exist_ok=True)
  if not os.listdir(corpora[0]):
    write_seed_corpus(corpora[0])
  _MODELS.update(load_models(_factory_registry()))
  atheris.Setup([argv[0], *flags, *corpora], one_input)
  atheris.Fuzz()  # exits the process when done


if __name__ == '__main__':
  main(sys.argv)
