"""Rate limiting with a token bucket.

>>> bucket = TokenBucket(rate_per_s=1000, burst=100)
>>> for message in messages:          # doctest: +SKIP
...   bucket.acquire()                # sleeps just enough to keep 1000 messages/s
...   sink.send(message)
"""

from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
  """Tokens accrue at ``rate_per_s`` up to ``burst``; each message spends one.

  The bucket starts with one token, so a run starts at once but does not begin with a burst
  (that would inflate the rate measured over a short run). ``acquire(n)`` may drive the level
  below zero and then sleeps until the debt is repaid, so ``n`` larger than ``burst`` works
  and oversleeping is credited back on the next call.
  """

  def __init__(self, rate_per_s: float, burst: float | None = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep):
    if rate_per_s <= 0:
      raise ValueError('rate_per_s must be > 0 (no limit: do not use a bucket)')
    self.rate = float(rate_per_s)
    # Default: a tenth of a second's worth, at least one message.
    self.burst = float(burst) if burst is not None else max(1.0, self.rate / 10)
    if self.burst < 1:
      raise ValueError('burst must be >= 1')
    self._clock, self._sleep = clock, sleep
    self._tokens = 1.0
    self._last = clock()

  def acquire(self, n: float = 1) -> float:
    """Takes ``n`` tokens, sleeping if there are not enough; returns the seconds slept."""
    now = self._clock()
    self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
    self._last = now
    self._tokens -= n
    if self._tokens >= 0:
      return 0.0
    wait = -self._tokens / self.rate
    self._sleep(wait)
    return wait
