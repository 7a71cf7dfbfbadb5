"""BatchByStream on the DirectRunner: each message in exactly one batch of its own stream, no
batch over the size, a message of an unknown stream dead-lettered with its bytes; and the
coders of messages and batches, which estimate sizes without encoding."""

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from schemas.records import NETWORK
from tests.factories import message, network_record, process_record
from transforms.batch import RecordBatch, RecordBatchCoder
from transforms.dead_letter import DEAD_LETTER
from transforms.parse import ParseAndClean, parse_messages
from transforms.route import BatchByStream
from transforms.source import MessageBatch, SourceMessage, SourceMessageCoder


def test_messages_are_batched_by_stream_and_unknown_streams_dead_lettered():
  network = [message('network', network_record(i), offset=i) for i in range(7)]
  process = [message('process', [process_record(1, 100 + i, 'sshd', 1700000000 + i, False)], offset=i) for i in range(5)]
  stray = message('network', network_record(99), offset=99)._replace(stream='dns')
  pipeline = TestPipeline()
  batches = (pipeline | beam.Create(network + process + [stray])
             | BatchByStream(['network', 'process', 'memory'], batch_size=3))

  def check(stream, sent):
    def assert_batches(lists):
      assert all(1 <= len(batch) <= 3 for batch in lists), [len(b) for b in lists]
      assert all(m.stream == stream for batch in lists for m in batch)
      assert sorted(m.offset for batch in lists for m in batch) == [m.offset for m in sent]
    return assert_batches
  assert_that(batches['network'], check('network', network), label='Network')
  assert_that(batches['process'], check('process', process), label='Process')
  assert_that(batches['memory'], equal_to([]), label='NoMemory')
  assert_that(batches[DEAD_LETTER] | beam.Map(
      lambda row: (row['stream'], row['stage'], row['offset'], row['payload'], row['error'])),
      equal_to([('dns', 'route', 99, stray.value, "unknown stream 'dns'")]), label='Stray')
  pipeline.run()


def test_parse_and_clean_dead_letters_a_message_of_another_stream():
  pipeline = TestPipeline()
  foreign = message('process', [process_record(1, 100, 'sshd', 1700000000, False)], offset=7)
  result = (pipeline | beam.Create([message('network', network_record(1)), foreign])
            | ParseAndClean(NETWORK))
  assert_that(result['network'] | beam.Map(len), equal_to([1]), label='Records')
  assert_that(result[DEAD_LETTER] | beam.Map(lambda row: (row['stage'], row['payload'])),
              equal_to([('route', foreign.value)]), label='DeadLetters')
  pipeline.run()


def test_coders_round_trip_and_estimate_from_the_raw_bytes():
  sent = message('network', network_record(1), offset=3)
  coder = beam.coders.registry.get_coder(SourceMessage)
  assert isinstance(coder, SourceMessageCoder)
  assert coder.decode(coder.encode(sent)) == sent
  assert len(sent.value) < coder.estimate_size(sent) < len(sent.value) + 100

  batch, _ = parse_messages(NETWORK, [sent])
  batch_coder = beam.coders.registry.get_coder(RecordBatch)
  assert isinstance(batch_coder, RecordBatchCoder)
  decoded = batch_coder.decode(batch_coder.encode(batch))
  assert decoded.columns == batch.columns and decoded.messages == batch.messages
  assert batch_coder.estimate_size(batch) == len(sent.value)


def test_batches_are_cut_by_bytes_as_well_as_by_messages():
  """A batch of 2,000 messages of 1 MiB each would be 2 GiB in one bundle: BatchByStream also
  closes a batch at max_batch_bytes (schemas/limits.py: MAX_BATCH_BYTES)."""
  big = [SourceMessage('network', b'x' * 300_000, 't', 0, i) for i in range(10)]
  pipeline = TestPipeline()
  batches = (pipeline | beam.Create(big, reshuffle=False)
             | BatchByStream(['network'], batch_size=2000, max_batch_bytes=1_000_000))

  def check(lists):
    assert sorted(m.offset for batch in lists for m in batch) == list(range(10))
    assert all(sum(len(m.value) for m in batch) < 1_000_000 + 300_000 for batch in lists)
    assert len(lists) >= 3, [len(b) for b in lists]
  assert_that(batches['network'], check)
  pipeline.run()


def test_a_batch_open_for_max_wait_goes_on_before_the_bundle_ends(monkeypatch):
  """Records streaming into a running bundle: a stream's batch that has waited max_wait_s is
  output after the element that finds it so (checked per element), not at the bundle's end;
  a fresh one keeps filling."""
  from transforms import route  # pylint: disable=import-outside-toplevel
  now = [50.0]
  monkeypatch.setattr(route.time, 'monotonic', lambda: now[0])
  fn = route._BatchByStreamFn(['network', 'process'], batch_size=100, max_wait_s=0.01)  # pylint: disable=protected-access
  fn.start_bundle()
  first = [message('network', network_record(i), offset=i) for i in range(3)]
  assert list(fn.process(MessageBatch(first, 0))) == []
  now[0] += 0.004
  assert list(fn.process(first[0]._replace(offset=3))) == []
  now[0] += 0.007
  second = [message('network', network_record(i), offset=i) for i in range(4, 6)]
  [out] = list(fn.process(MessageBatch(second, 0)))
  assert out.tag == 'network' and [m.offset for m in out.value] == [0, 1, 2, 3, 4, 5]
  late = message('network', network_record(9), offset=9)
  assert list(fn.process(late)) == []  # a new batch, open since now
  [rest] = list(fn.finish_bundle())
  assert [m.offset for m in rest.value.value] == [9]


def test_without_max_wait_batches_wait_for_size_or_the_bundle(monkeypatch):
  from transforms import route  # pylint: disable=import-outside-toplevel
  now = [50.0]
  monkeypatch.setattr(route.time, 'monotonic', lambda: now[0])
  fn = route._BatchByStreamFn(['network'], batch_size=100)  # pylint: disable=protected-access
  fn.start_bundle()
  for i in range(3):
    assert list(fn.process(message('network', network_record(i), offset=i))) == []
    now[0] += 10
  [rest] = list(fn.finish_bundle())
  assert len(rest.value.value) == 3
