"""Pure functions that turn one decoded JSON record into a typed, cleaned dict.

Kept free of Beam so the generator, the retrain job and the fuzz tests call exactly the code
the stream runs. Every failure is a :class:`CleaningError` whose message says which field and
why; the ParseAndClean transform turns it into a dead letter.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

from schemas.records import FLOAT, INT, STR, RecordSchema

# Host tools print sizes with decimal unit suffixes: " 1.5K" is 1500, "12M" is 12,000,000.
_UNITS = {'': 1, 'K': 10**3, 'M': 10**6, 'G': 10**9, 'T': 10**12, 'P': 10**15}
_MESSY_NUMBER = re.compile(r'^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([KMGTP%]?)$',
                           re.IGNORECASE)
_MISSING = ('', '-')
# Larger magnitudes are corrupt input, and int64 Parquet columns cannot hold them anyway.
MAX_ABS_VALUE = 2.0**62
MAX_STRING_LENGTH = 4096


class CleaningError(ValueError):
  """A record (or one of its fields) cannot be cleaned."""


def parse_number(value: Any) -> Optional[float]:
  """A messy numeric value as a float, or None when missing.

  >>> parse_number('  1.5K'), parse_number('-3K'), parse_number('40%'), parse_number('-')
  (1500.0, -3000.0, 40.0, None)
  """
  if value is None:
    return None
  if isinstance(value, bool):
    raise CleaningError(f'boolean {value!r} where a number is expected')
  if isinstance(value, (int, float)):
    try:
      number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
      raise CleaningError(f'number out of range: {str(value)[:40]}') from None
  elif isinstance(value, str):
    text = value.strip()
    if text in _MISSING:
      return None
    match = _MESSY_NUMBER.match(text)
    if not match:
      raise CleaningError(f'not a number: {value[:40]!r}')
    digits, unit = match.groups()
    number = float(digits) * (1 if unit == '%' else _UNITS[unit.upper()])
  else:
    raise CleaningError(f'{type(value).__name__} where a number is expected')
  if not math.isfinite(number):
    raise CleaningError(f'not a finite number: {value!r}')
  if abs(number) > MAX_ABS_VALUE:
    raise CleaningError(f'number out of range: {value!r}')
  return number


def _cast(name: str, kind: str, value: Any) -> Any:
  # Fast paths: most values already arrive as JSON numbers of the right kind.
  value_type = type(value)
  if value_type is int and kind != STR and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
    return value if kind == INT else float(value)
  if value_type is float and kind == FLOAT and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
    return value  # NaN fails both comparisons and takes the slow path's error
  if kind == STR:
    if value is None:
      return None
    if isinstance(value, (dict, list, bool)):
      raise CleaningError(f'{name}: {type(value).__name__} where a string is expected')
    text = str(value).strip()
    if len(text) > MAX_STRING_LENGTH:
      raise CleaningError(f'{name}: string longer than {MAX_STRING_LENGTH} characters')
    return None if text in _MISSING else text
  try:
    number = parse_number(value)
  except CleaningError as e:
    raise CleaningError(f'{name}: {e}') from None
  if number is None or kind == FLOAT:
    return number
  # A unit suffix means the producer rounded for display ("1.5K"): round back to a count.
  # A bare non-integral value in an integer field is a wrong type, not rounding.
  has_suffix = isinstance(value, str) and value.strip()[-1:].isalpha()
  if not has_suffix and not float(number).is_integer():
    raise CleaningError(f'{name}: {value!r} is not an integer')
  return int(round(number))


def clean_record(schema: RecordSchema, raw: Any) -> dict[str, Any]:
  """Casts one decoded JSON object to ``schema``; unknown fields are ignored.

  >>> from schemas.records import MEMORY
  >>> clean_record(MEMORY, {'machine': '3', 'PID': ' 42', 'CMD': 'sshd', 'ts': 1700000000,
  ...                       'VSIZE': '1.5M', 'MEM': '2%'})['VSIZE']
  1500000.0
  """
  if not isinstance(raw, dict):
    raise CleaningError(f'expected a JSON object, got {type(raw).__name__}')
  cleaned = {}
  for field in schema.fields:
    value = _cast(field.name, field.kind, raw.get(field.name))
    if value is None and field.required:
      raise CleaningError(f'{field.name}: required field is missing')
    cleaned[field.name] = value
  if 'PRI' in cleaned:
    # atop's NICE column is unreliable in the sources; the kernel's rule is authoritative.
    cleaned['NICE'] = None if cleaned['PRI'] is None else cleaned['PRI'] - 120
  if 'CMD' in cleaned:
    cleaned['CMD_PID'] = f"{cleaned['CMD']}_{cleaned['PID']}"
  return cleaned
