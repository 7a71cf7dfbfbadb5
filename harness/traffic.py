"""Synthetic traffic sent in the background while a job runs (the fault tests and
benchmarks/chaos.py), with the uuids the broker acknowledged for the accounting."""

from __future__ import annotations

import threading
import time
from typing import Optional

from generator.rate import TokenBucket
from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages


class Traffic(threading.Thread):
  """Sends ``count`` synthetic network messages (endless with None, until :meth:`stop_sending`)
  at ``rate``/s in the background, through a KafkaSink (acks=all, idempotent); its delivery
  reports give the acknowledged uuids. A broker outage only delays deliveries (librdkafka
  retries until message.timeout.ms, 5 min). Used by the fault tests and benchmarks/chaos.py.

  Used as a context manager: leaving the block early (a failed assertion) stops the sending
  and closes the producer, so nothing keeps sending or reconnecting after the test."""

  def __init__(self, bootstrap: str, topics: dict[str, str], count: Optional[int], rate: float,
               seed: int = 11, producer_config: Optional[dict] = None):
    super().__init__(daemon=True)
    # Event times a few minutes back: the job's windows close as soon as data is read.
    start_ms = int((time.time() - 600) * 1000)
    self.config = SourceConfig(streams=('network',), count=count, seed=seed,
                               event_rate=rate, start_ms=start_ms, topics=topics)
    self.sink = KafkaSink(bootstrap, producer_config)
    self.rate = rate
    self.error: Optional[BaseException] = None
    self._stopping = threading.Event()
    self._enough = threading.Event()

  def __enter__(self) -> 'Traffic':
    return self

  def __exit__(self, *_exc) -> None:
    self._stopping.set()
    if self.is_alive():
      self.join(30)
    if not self.is_alive():  # else the thread itself closes the sink once its flush is over
      self.sink.close(timeout_s=5)

  def run(self):
    try:
      bucket = TokenBucket(self.rate)
      for message in generate_messages(self.config):
        if self._stopping.is_set() or self._enough.is_set():
          break
        bucket.acquire()
        self.sink.send(message)
      self.sink.close(timeout_s=5 if self._stopping.is_set() else 120)
    except BaseException as e:  # pylint: disable=broad-except
      self.error = e

  def stop_sending(self) -> None:
    """Ends an endless run: no more sends; what is in flight is still confirmed (finish)."""
    self._enough.set()

  def finish(self, timeout_s: float = 180) -> dict:
    self.join(timeout_s)
    assert not self.is_alive(), 'the generator did not finish'
    assert self.error is None, self.error
    return self.sink.stats()
