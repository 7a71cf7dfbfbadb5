"""Pure functions that turn decoded JSON records into typed, cleaned columns.

Kept free of Beam so the generator, the retrain job and the fuzz tests call exactly the code
the stream runs. Every failure is a :class:`CleaningError` whose message says which field and
why; the ParseAndClean transform turns it into a dead letter.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from typing import Annotated, Any, Callable, Optional, Sequence, Union

import msgspec

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


# A value that only ``_cast`` cleans: the fast paths below leave it to the per-value path.
_SLOW = object()


def _plain_number(kind: str, value: Any) -> Any:
  """``_cast`` of a value that is not already a number of the field's type, for the forms
  most values take (an int in a float field, a plain numeral string, a missing value); any
  other value is ``_SLOW``. Each branch returns what ``_cast`` returns for that value."""
  value_type = type(value)
  if value_type is str:
    text = value.strip()
    if text in _MISSING:
      return None
    # parse_number's own plain-numeral branch, and _cast's integer rule for a value without
    # a unit suffix (one that ends in a digit has none).
    if text[-1:].isdigit() and '_' not in text and len(text) <= MAX_NUMBER_LENGTH:
      try:
        number = float(text)
      except ValueError:
        return _SLOW
      if -MAX_ABS_VALUE <= number <= MAX_ABS_VALUE:  # NaN and infinities fail this
        if kind == FLOAT:
          return number
        if number.is_integer():
          return int(number)
      return _SLOW
    # A plain decimal with a unit ("1.5K", "-100K", "0.02%"): what _MESSY_NUMBER reads
    # (here without an exponent or a space before the unit), scaled as parse_number scales.
    unit, digits = text[-1:], text[:-1]
    scale = 1 if unit == '%' else _UNITS.get(unit.upper()) if unit.isalpha() else None
    unsigned = digits[1:] if digits[:1] in ('+', '-') else digits
    if scale is not None and len(text) <= MAX_NUMBER_LENGTH and unsigned.replace(
        '.', '', 1).isdecimal():
      number = float(digits) * scale
      if -MAX_ABS_VALUE <= number <= MAX_ABS_VALUE:
        if kind == FLOAT:
          return number
        # A unit letter means the producer rounded for display; a bare % does not.
        if unit != '%' or number.is_integer():
          return int(round(number))
    return _SLOW
  if value is None:
    return None
  if value_type is int and kind == FLOAT and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
    return float(value)
  return _SLOW


def _whole_column(kind: str, values: Sequence, bounded: bool) -> Optional[list]:
  """The cleaned column in a few passes of builtins when every value is already of its final
  type and within bounds (network records nearly always are); None when one is not.
  ``bounded``: the values come from the typed decoder, whose numbers are finite and within
  bounds already."""
  types = set(map(type, values))
  if kind == INT:
    if types == {int} and (bounded or (
        -MAX_ABS_VALUE <= min(values) and max(values) <= MAX_ABS_VALUE)):
      return list(values)
  elif kind == FLOAT:
    if types and types <= {int, float} and (bounded or (
        -MAX_ABS_VALUE <= min(values) and max(values) <= MAX_ABS_VALUE)):
      # min and max can miss a NaN (it compares false with everything): look for one.
      if types == {int}:
        return list(map(float, values))
      if bounded or not any(map(math.isnan, values)):
        return list(values) if types == {float} else list(map(float, values))
  elif kind == STR and types == {str}:
    stripped = list(map(str.strip, values))
    if max(map(len, stripped)) <= MAX_STRING_LENGTH:
      if '' in stripped or '-' in stripped:
        return [None if s in _MISSING else s for s in stripped]
      return stripped
  return None


def _clean_column(field: Field, values: Sequence, errors: dict[int, str],
                  bounded: bool = False) -> list:
  """Casts one column; a value that fails records its row's first error in ``errors``.

  Three tiers, each giving what ``_cast`` gives value by value: the whole column at once
  (:func:`_whole_column`), then each value by the common forms (numbers of the right type
  inline, :func:`_plain_number` for the rest), and ``_cast`` itself, with its error, for
  what is left."""
  if not values:
    return []
  kind = field.kind
  cleaned = _whole_column(kind, values, bounded)
  if cleaned is not None:
    return cleaned
  # Inline, the two commonest forms: a number of the field's type, and a short string of
  # decimal digits (with a point for a float field), which reads exactly (below 2**53) and
  # well within bounds.
  if kind == INT:
    cleaned = [v if type(v) is int and -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE
               else int(s) if type(v) is str and (s := v.strip()).isdecimal() and len(s) < 16
               else _plain_number(kind, v) for v in values]
  elif kind == FLOAT:
    cleaned = [v if type(v) is float and -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE
               else float(s) if type(v) is str and (s := v.strip()).replace('.', '', 1
                                                                        ).isdecimal()
               and len(s) < 16 else _plain_number(kind, v) for v in values]
  else:
    cleaned = [_SLOW] * len(values)
  position = 0
  for _ in range(cleaned.count(_SLOW)):  # list.count and index compare by identity first
    position = cleaned.index(_SLOW, position)
    try:
      cleaned[position] = _cast(field.name, kind, values[position])
    except CleaningError as e:
      errors.setdefault(position, str(e))
      cleaned[position] = None
    position += 1
  return cleaned


# What a typed decoder (transforms/parse.py) may hand cleaning for a field: a JSON value that
# the decoder's own checks leave exactly as orjson would decode it. Anything else (booleans,
# objects, out-of-range numbers, unknown fields) makes it refuse the message, which is then
# decoded and cleaned the exact way.
_INT_BOUND = int(MAX_ABS_VALUE)
_TYPED_VALUES = {
    INT: Union[Annotated[int, msgspec.Meta(ge=-_INT_BOUND, le=_INT_BOUND)],
               Annotated[float, msgspec.Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)], str, None],
    STR: Optional[str],
}
_TYPED_VALUES[FLOAT] = _TYPED_VALUES[INT]


@functools.lru_cache(maxsize=None)
def record_struct(schema: RecordSchema) -> type[msgspec.Struct]:
  """The msgspec Struct a typed JSON decoder reads ``schema``'s records into: its fields in
  schema order, each None when absent, no unknown field allowed. :func:`clean_records` takes
  these as it takes the decoded dicts, without building a dict per record, and trusts their
  numbers to be within bounds: make them with a typed decoder only (``msgspec.json.Decoder``
  checks the bounds; the constructor does not)."""
  return msgspec.defstruct(
      f'{schema.stream.title()}Record',
      [(f.name, _TYPED_VALUES[f.kind], None) for f in schema.fields],
      forbid_unknown_fields=True, gc=False)


def _is_record(schema: RecordSchema, raw: Any) -> bool:
  return isinstance(raw, dict) or type(raw) is record_struct(schema)


def _raw_columns(schema: RecordSchema, records: list) -> list[Sequence]:
  """Each field's values in ``records`` (dicts or :func:`record_struct`s; None where a record
  lacks the field), in schema order."""
  names = schema.names
  if not records or len(names) < 2:
    return [[_get(r, name) for r in records] for name in names]
  types = set(map(type, records))
  struct = record_struct(schema)
  if types == {struct}:
    rows = map(msgspec.structs.astuple, records)
  elif types == {dict}:
    try:
      rows = list(map(_getter(names), records))  # one C call per record, not one per field
    except KeyError:
      rows = [tuple(map(r.get, names)) for r in records]
  else:
    rows = [msgspec.structs.astuple(r) if type(r) is struct else tuple(map(r.get, names))
            for r in records]
  return list(zip(*rows))


def _get(record: Any, name: str) -> Any:
  return record.get(name) if isinstance(record, dict) else getattr(record, name)


@functools.lru_cache(maxsize=None)
def _getter(names: tuple[str, ...]) -> Callable[[dict], tuple]:
  return operator.itemgetter(*names)


def clean_records(schema: RecordSchema, raws: Sequence[Any]
                  ) -> tuple[dict[str, list], list[int], dict[int, str]]:
  """Casts decoded JSON objects (or :func:`record_struct`s) to ``schema``, column by column;
  unknown fields are ignored.

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
  if set(map(type, raws)) <= {dict, record_struct(schema)}:
    objects, records = range(len(raws)), list(raws)
  else:
    objects = []
    for position, raw in enumerate(raws):
      if _is_record(schema, raw):
        objects.append(position)
      else:
        errors[position] = f'expected a JSON object, got {type(raw).__name__}'
    records = [raws[p] for p in objects]
  column_errors: dict[int, str] = {}  # keyed by position in ``records``
  columns = {}
  # Only the typed decoder makes record_structs, and their numbers are within bounds.
  bounded = bool(records) and set(map(type, records)) == {record_struct(schema)}
  for field, values in zip(schema.fields, _raw_columns(schema, records)):
    values = _clean_column(field, values, column_errors, bounded)
    if field.required and None in values:
      for position, value in enumerate(values):
        if value is None:
          column_errors.setdefault(position, f'{field.name}: required field is missing')
    columns[field.name] = values
  for position, error in column_errors.items():
    errors[objects[position]] = error
  kept = range(len(records))
  if column_errors:
    kept = [p for p in kept if p not in column_errors]
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
