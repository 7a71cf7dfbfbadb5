"""Coverage-guided fuzzing of parsing and cleaning with atheris (libFuzzer), a complement to
the hypothesis test in ``tests/test_fuzz_parse.py``: that one tries the hostile shapes we
thought of, this one mutates real messages at random, guided by which branches of
``transforms.parse`` and ``transforms.cleaning`` a mutation reaches.

    python -m tests.fuzz_parse_atheris -max_total_time=600       # ten minutes
    python -m tests.fuzz_parse_atheris -runs=5000                # what the test suite runs

Any libFuzzer flag works; corpus directories may follow (default: .cache/fuzz/parse). An empty
first corpus is seeded with the generator's own messages of each stream; libFuzzer adds every
input that reaches new code to it.
The first input byte picks the stream, the rest is one message's value. For each input the
same property as the hypothesis test must hold: nothing raises, and the message ends up parsed
or dead-lettered exactly once, record by record for host arrays. A violation stops the run
with the input saved as ``crash-<sha1>`` (libFuzzer's reproducer: pass its path to rerun it).
"""

from __future__ import annotations

import os
import sys

import atheris

# Only our parsing code is instrumented: instrumenting Beam and pandas on import takes minutes.
with atheris.instrument_imports(include=['transforms.parse', 'transforms.cleaning',
                                         'transforms.batch', 'schemas']):
  from schemas.records import SCHEMAS
  from transforms.parse import parse_messages

from tests.test_fuzz_parse import _check
from transforms.source import SourceMessage

STREAMS = sorted(SCHEMAS)
DEFAULT_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              '.cache', 'fuzz', 'parse')


def one_input(data: bytes) -> None:
  if not data:
    return
  stream = STREAMS[data[0] % len(STREAMS)]
  message = SourceMessage(stream, data[1:], source=f'fuzz-{stream}', partition=0, offset=0)
  batch, dead = parse_messages(SCHEMAS[stream], [message])
  _check(stream, [message], [batch] if batch.messages else [], dead)


def write_seed_corpus(directory: str, per_stream: int = 20) -> None:
  """The generator's messages (network records, host arrays), one file each."""
  from generator.source import SourceConfig, generate_messages
  for index, stream in enumerate(STREAMS):
    config = SourceConfig(streams=(stream,), count=per_stream, seed=index, machines=3,
                          duration_s=5, start_ms=1_700_000_000_000)
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
  atheris.Setup([argv[0], *flags, *corpora], one_input)
  atheris.Fuzz()  # exits the process when done


if __name__ == '__main__':
  main(sys.argv)
