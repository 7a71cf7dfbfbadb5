"""Pure functions that turn decoded JSON records into typed, cleaned columns.

Kept free of Beam so the generator, the retrain job and the fuzz tests call exactly the code
the stream runs. Every failure is a :class:`CleaningError` whose message says which field and
why; the ParseAndClean transform turns it into a dead letter.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence

from schemas.limits import MAX_ABS_VALUE, MAX_NUMBER_LENGTH, MAX_STRING_LENGTH
from schemas.records import FLOAT, INT, STR, Field, RecordSchema

# Host tools print sizes with decimal unit suffixes: " 1.5K" is 1500, "12M" is 12,000,000.
_UNITS = {'': 1, 'K': 10**3, 'M': 10**6, 'G': 10**9, 'T': 10**12, 'P': 10**15}
# Possessive quantifiers (they never give back what they matched): each character is looked
# at once, so a long digit string costs linear time instead of quadratic backtracking. Taking
# less never helps here: what a quantifier leaves could not match what follows it.
_MESSY_NUMBER = re.compile(
    r'^([+-]?+(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?+\d++)?+)\s*+([KMGTP%]?+)$',
    re.IGNORECASE)
_MISSING = ('', '-')


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
    if len(text) > MAX_NUMBER_LENGTH:
      raise CleaningError(f'numeric string longer than {MAX_NUMBER_LENGTH} characters: '
                          f'{text[:40]!r}...')
    if text[-1:].isdigit() and '_' not in text:
      # A plain numeral (most host values): float() reads the same grammar as the regex
      # below, plus "1_000", excluded here; "nan" or "inf" end in a letter.
      try:
        number = float(text)
      except ValueError:
        number = None
      if number is not None:
        return _checked(number, value)
    match = _MESSY_NUMBER.match(text)
    if not match:
      raise CleaningError(f'not a number: {value[:40]!r}')
    digits, unit = match.groups()
    number = float(digits) * (1 if unit == '%' else _UNITS[unit.upper()])
  else:
    raise CleaningError(f'{type(value).__name__} where a number is expected')
  return _checked(number, value)


def _checked(number: float, value: Any) -> float:
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


def _clean_column(field: Field, values: list, errors: dict[int, str]) -> list:
  """Casts one column; a value that fails records its row's first error in ``errors``."""
  kind = field.kind
  # Fast paths, one pass each over a column that is already of the right type (network
  # records are nearly always); anything else falls back to ``_cast`` value by value.
  if kind == INT and all(type(v) is int for v in values):
    if not values or (-MAX_ABS_VALUE <= min(values) and max(values) <= MAX_ABS_VALUE):
      return values
  elif kind == FLOAT and all(type(v) is float or type(v) is int for v in values):
    if all(-MAX_ABS_VALUE <= v <= MAX_ABS_VALUE for v in values):  # NaN fails this too
      return [float(v) for v in values]
  elif kind == STR and all(type(v) is str for v in values):
    stripped = [v.strip() for v in values]
    if not stripped or max(map(len, stripped)) <= MAX_STRING_LENGTH:
      return [None if s in _MISSING else s for s in stripped]
  cleaned = []
  for position, value in enumerate(values):
    try:
      cleaned.append(_cast(field.name, kind, value))
    except CleaningError as e:
      errors.setdefault(position, str(e))
      cleaned.append(None)
  return cleaned


def clean_records(schema: RecordSchema, raws: Sequence[Any]
                  ) -> tuple[dict[str, list], list[int], dict[int, str]]:
  """Casts decoded JSON objects to ``schema``, column by column; unknown fields are ignored.

  Returns the columns of the records that cleaned, their positions in ``raws``, and for each
  record that did not, its position and why (the first failing field in schema order).

  >>> from schemas.records import MEMORY
  >>> columns, kept, errors = clean_records(MEMORY, [
  ...     {'machine': '3', 'PID': ' 42', 'CMD': 'sshd', 'ts': 1700000000, 'VSIZE': '1.5M'},
  ...     {'machine': '3', 'PID': 'x', 'CMD': 'sshd', 'ts': 1700000000}])
  >>> columns['VSIZE'], kept, errors
  ([1500000.0], [0], {1: "PID: not a number: 'x'"})
  """
  errors: dict[int, str] = {}
  objects = []
  for position, raw in enumerate(raws):
    if isinstance(raw, dict):
      objects.append(position)
    else:
      errors[position] = f'expected a JSON object, got {type(raw).__name__}'
  records = [raws[p] for p in objects]
  column_errors: dict[int, str] = {}  # keyed by position in ``records``
  columns = {}
  for field in schema.fields:
    values = _clean_column(field, [r.get(field.name) for r in records], column_errors)
    if field.required and None in values:
      for position, value in enumerate(values):
        if value is None:
          column_errors.setdefault(position, f'{field.name}: required field is missing')
    columns[field.name] = values
  for position, error in column_errors.items():
    errors[objects[position]] = error
  kept = [p for p in range(len(records)) if p not in column_errors]
  if column_errors:
    columns = {name: [values[p] for p in kept] for name, values in columns.items()}
  if 'PRI' in columns:
    # atop's NICE column is unreliable in the sources; the kernel's rule is authoritative.
    columns['NICE'] = [None if pri is None else pri - 120 for pri in columns['PRI']]
  if 'CMD' in columns:
    columns['CMD_PID'] = [f'{cmd}_{pid}' for cmd, pid in zip(columns['CMD'], columns['PID'])]
  return columns, [objects[p] for p in kept], errors


def clean_record(schema: RecordSchema, raw: Any) -> dict[str, Any]:
  """One record through :func:`clean_records`; raises :class:`CleaningError` if it fails.

  >>> from schemas.records import MEMORY
  >>> clean_record(MEMORY, {'machine': '3', 'PID': ' 42', 'CMD': 'sshd', 'ts': 1700000000,
  ...                       'VSIZE': '1.5M', 'MEM': '2%'})['VSIZE']
  1500000.0
  """
  columns, _, errors = clean_records(schema, [raw])
  if errors:
    raise CleaningError(errors[0])
  return {name: values[0] for name, values in columns.items()}
