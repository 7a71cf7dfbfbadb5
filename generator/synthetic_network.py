"""A labelled synthetic network source shaped like the KDD Cup 1999 10% file.

>>> frame = generate_network(1000, seed=7)
>>> list(frame.columns) == list(KDD_FEATURES) + ['label']
True
>>> frame['label'].value_counts().index[0]      # smurf, then neptune, then normal
'smurf'

The columns and dtypes are those of :func:`schemas.kdd.read_kdd_csv`. Per-family patterns
are in :mod:`generator.network_families`; this module mixes them, adds label-independent
camouflage and shuffles.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from generator import network_families as families
from schemas.kdd import LABEL, frame_dtypes
from generator.sampling import Sampler
from schemas.records import FLOAT, INT, KDD_FEATURES, NETWORK

# Label counts of kddcup.data_10_percent (494,021 records, 23 labels).
LABEL_COUNTS_10_PERCENT: dict[str, int] = {
    'smurf': 280790, 'neptune': 107201, 'normal': 97278, 'back': 2203, 'satan': 1589,
    'ipsweep': 1247, 'portsweep': 1040, 'warezclient': 1020, 'teardrop': 979, 'pod': 264,
    'nmap': 231, 'guess_passwd': 53, 'buffer_overflow': 30, 'land': 21, 'warezmaster': 20,
    'imap': 12, 'rootkit': 10, 'loadmodule': 9, 'ftp_write': 8, 'multihop': 7, 'phf': 4,
    'perl': 3, 'spy': 2,
}
_TOTAL = sum(LABEL_COUNTS_10_PERCENT.values())
DEFAULT_MIX: dict[str, float] = {k: v / _TOTAL for k, v in LABEL_COUNTS_10_PERCENT.items()}
LABELS = tuple(DEFAULT_MIX)
CATEGORY = families.CATEGORY  # label -> normal / dos / probe / r2l / u2r
_MAX = {'count': 511, 'srv_count': 511, 'dst_host_count': 255, 'dst_host_srv_count': 255}


def _normalised(mix: Mapping[str, float]) -> dict[str, float]:
  unknown = set(mix) - set(families.FAMILIES)
  if unknown:
    raise ValueError(f'unknown labels in mix: {sorted(unknown)}; known: {list(LABELS)}')
  total = float(sum(mix.values()))
  if total <= 0 or any(w < 0 for w in mix.values()):
    raise ValueError('mix weights must be non-negative with a positive sum')
  return {label: w / total for label, w in mix.items() if w > 0}


def _camouflage(s: Sampler, label: str, columns: families.Columns) -> None:
  """Gives a share of an attack family the traffic-window features of normal traffic."""
  share = families.CAMOUFLAGE.get(CATEGORY[label], 0.0)
  rows = np.flatnonzero(s.coin(len(columns['service']), share))
  if len(rows):
    normal = families.normal_window(s, columns['service'][rows], columns['flag'][rows])
    for name, values in normal.items():
      columns[name][rows] = values


def _finish(columns: families.Columns) -> None:
  """Rates are fractions with two decimals and counts are bounded, as in the real files."""
  for name in KDD_FEATURES:
    kind = NETWORK.field(name).kind
    if kind == FLOAT:
      columns[name] = np.round(np.clip(columns[name], 0.0, 1.0), 2)
    elif kind == INT:
      columns[name] = np.clip(columns[name], 0, _MAX.get(name)).astype(np.int64)


def generate_network(n: int, seed: int, mix: Mapping[str, float] | None = None) -> pd.DataFrame:
  """``n`` labelled records in random order, like ``read_kdd_csv`` returns.

  ``mix`` maps labels (see ``LABELS``) to relative weights; the default is the 10% file's
  mixture. Family sizes are multinomial, so rare labels appear in proportion on average even
  when ``n`` is generated in small chunks.
  """
  if n < 0:
    raise ValueError('n must be >= 0')
  probabilities = _normalised(DEFAULT_MIX if mix is None else mix)
  s = Sampler(np.random.default_rng(seed))
  sizes = s.rng.multinomial(n, list(probabilities.values()))
  parts = []
  for label, size in zip(probabilities, sizes):
    if size == 0:
      continue
    columns = families.FAMILIES[label](s, int(size))
    _camouflage(s, label, columns)
    _finish(columns)
    columns[LABEL] = np.full(size, label, dtype=object)
    parts.append(columns)
  names = list(KDD_FEATURES) + [LABEL]
  if not parts:
    empty = families.blank(0)
    empty[LABEL] = np.array([], dtype=object)
    parts = [empty]
  order = s.rng.permutation(n)
  # Shuffling after the string columns became Arrow-backed is far cheaper than shuffling
  # numpy object arrays.
  frame = frame_dtypes(pd.DataFrame(
      {name: np.concatenate([p[name] for p in parts]) for name in names}, columns=names))
  return frame.take(order).reset_index(drop=True)
