"""transforms/fn_data.py: a Python worker's time-limited output buffering sends whole elements
only, through Beam's own data channel and coders."""

from apache_beam.coders import coders
from apache_beam.runners.worker import data_plane

from transforms import fn_data


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_flushes_whole_elements_once_the_time_limit_has_passed():
  sent = []
  clock = FakeClock()
  stream = fn_data.ElementBoundaryFlushStream(sent.append, flush_callback=sent.append,
                                              time_flush_threshold_ms=10, clock=clock)
  coder = coders.BytesCoder().get_impl()
  coder.encode_to_stream(b'first', stream, True)
  stream.maybe_flush()  # nothing sent for 10 ms: out at once
  coder.encode_to_stream(b'second', stream, True)
  clock.now += 0.004
  stream.maybe_flush()  # 4 ms after the last flush: kept
  coder.encode_to_stream(b'third', stream, True)
  clock.now += 0.006
  stream.maybe_flush()  # 10 ms: both kept elements go together
  coder.encode_to_stream(b'last', stream, True)
  stream.close()  # the bundle's end sends the rest
  decoded = [_decode_all(coder, chunk) for chunk in sent]
  assert decoded == [[b'first'], [b'second', b'third'], [b'last']]


def _decode_all(coder, data):
  stream, out = coders.coder_impl.create_InputStream(data), []
  while stream.size() > 0:
    out.append(coder.decode_from_stream(stream, True))
  return out


def test_installed_channels_use_it_only_with_a_time_limit():
  fn_data.install()
  fn_data.install()  # idempotent
  assert fn_data.installed()
  timed = data_plane.InMemoryDataChannel(data_buffer_time_limit_ms=20)
  untimed = data_plane.InMemoryDataChannel()
  assert isinstance(timed.output_stream('1', 't'), fn_data.ElementBoundaryFlushStream)
  plain = untimed.output_stream('1', 't')
  assert not isinstance(plain, fn_data.ElementBoundaryFlushStream)
  assert isinstance(plain, data_plane.SizeBasedBufferingClosableOutputStream)


def test_a_channel_with_a_time_limit_delivers_every_element_whole():
  fn_data.install()
  channel = data_plane.InMemoryDataChannel(data_buffer_time_limit_ms=1)
  out = channel.output_stream('bundle-1', 'transform')
  coder = coders.BytesCoder().get_impl()
  values = [bytes([i % 251]) * (1 + i * 37 % 5000) for i in range(300)]
  for value in values:
    coder.encode_to_stream(value, out, True)
    out.maybe_flush()
  out.close()
  chunks = [e.data for e in channel.inverse()._inputs if e.data]  # pylint: disable=protected-access
  assert [v for chunk in chunks for v in _decode_all(coder, chunk)] == values
