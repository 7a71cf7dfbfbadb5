"""Vectorised samplers shared by the synthetic sources (numpy Generator in, numpy arrays out)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


class Sampler:
  """Draws arrays of ``n`` values from a seeded ``numpy.random.Generator``.

  Heavy-tailed quantities (bytes, durations, counts) are log-normal around a median, because
  that is what traffic and process measurements look like; fractions are beta-distributed.
  """

  def __init__(self, rng: np.random.Generator):
    self.rng = rng

  def logn(self, n: int, median: float, sigma: float, lo: float = 0,
           hi: float | None = None) -> np.ndarray:
    """Integers, log-normal around ``median``, clipped to [lo, hi]."""
    x = median * np.exp(sigma * self.rng.standard_normal(n))
    return np.clip(np.rint(x), lo, hi).astype(np.int64)

  def logf(self, n: int, median: float, sigma: float) -> np.ndarray:
    """Floats, log-normal around ``median``."""
    return median * np.exp(sigma * self.rng.standard_normal(n))

  def uni(self, n: int, lo: int, hi: int) -> np.ndarray:
    """Integers uniform in [lo, hi]."""
    return self.rng.integers(lo, hi + 1, size=n, dtype=np.int64)

  def beta(self, n: int, a: float, b: float) -> np.ndarray:
    return self.rng.beta(a, b, size=n)

  def coin(self, n: int, p: float | np.ndarray) -> np.ndarray:
    """Booleans, True with probability ``p``."""
    return self.rng.random(n) < p

  def pick(self, n: int, weights: Mapping[str, float] | Sequence[str]) -> np.ndarray:
    """Values drawn by weight (a mapping) or uniformly (a sequence), as an object array."""
    if isinstance(weights, Mapping):
      values = list(weights)
      p = np.asarray(list(weights.values()), dtype=float)
      p = p / p.sum()
    else:
      values, p = list(weights), None
    index = self.rng.choice(len(values), size=n, p=p)
    return np.asarray(values, dtype=object)[index]

  def mix(self, n: int, *options: tuple[float, np.ndarray | float]) -> np.ndarray:
    """Per row, one of several equally long arrays (or scalars), chosen by weight."""
    weights = np.asarray([w for w, _ in options], dtype=float)
    choice = self.rng.choice(len(options), size=n, p=weights / weights.sum())
    out = np.empty(n, dtype=np.result_type(*[np.asarray(v) for _, v in options]))
    for k, (_, values) in enumerate(options):
      chosen = choice == k
      out[chosen] = values[chosen] if np.ndim(values) else values
    return out
