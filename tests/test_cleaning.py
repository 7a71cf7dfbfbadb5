"""Value parsing and record cleaning: the rules of DESIGN.md, one case per rule."""

import time

import pytest

from schemas.limits import MAX_NUMBER_LENGTH
from schemas.records import MEMORY, NETWORK, PROCESS
from tests.factories import memory_record, network_record, process_record
from transforms.cleaning import _MESSY_NUMBER, CleaningError, clean_record, parse_number


@pytest.mark.parametrize('raw, expected', [
    ('  1.5K', 1500.0),
    ('12M', 12_000_000.0),
    ('2G', 2_000_000_000.0),
    ('-3K', -3000.0),
    ('40%', 40.0),
    (' 3 ', 3.0),
    ('1.5k', 1500.0),
    ('0.25', 0.25),
    ('+7', 7.0),
    ('1e3', 1000.0),
    (12, 12.0),
    (0.5, 0.5),
    ('', None),
    ('-', None),
    ('   ', None),
    (None, None),
])
def test_parse_number_reads_messy_strings(raw, expected):
  assert parse_number(raw) == expected


@pytest.mark.parametrize('raw', [
    'abc', '1.5X', '1.2.3', 'K', '--3', 'NaN', 'inf', '1e400', float('nan'), float('inf'),
    10**30, 10**400, True, [1], {'a': 1},
])
def test_parse_number_refuses_what_is_not_a_finite_number(raw):
  with pytest.raises(CleaningError):
    parse_number(raw)


def test_process_record_is_typed_and_nice_follows_pri():
  cleaned = clean_record(PROCESS, process_record(7, 312, 'kworker', 1_700_000_000, False,
                                                 PRI=' 125', NICE='99', CPU=' 1.5%'))
  assert cleaned['machine'] == 7 and cleaned['PID'] == 312
  assert cleaned['PRI'] == 125 and cleaned['NICE'] == 5  # NICE = PRI - 120, not the input
  assert cleaned['CPU'] == 1.5
  assert cleaned['CMD_PID'] == 'kworker_312'
  assert cleaned['Status'] is None  # '-' is missing


def test_memory_sizes_with_suffixes_and_rounded_counts():
  cleaned = clean_record(MEMORY, memory_record(3, 42, 'java', 1_700_000_000, False,
                                               MINFLT='1.25K', VSIZE='1.5M', MEM='2%'))
  assert cleaned['MINFLT'] == 1250 and isinstance(cleaned['MINFLT'], int)
  assert cleaned['VSIZE'] == 1_500_000.0
  assert cleaned['MEM'] == 2.0


def test_missing_values_become_none_and_unknown_fields_are_ignored():
  raw = memory_record(3, 42, 'java', 1_700_000_000, False, VGROW='', RGROW='-')
  raw['some_new_field'] = 'whatever'
  cleaned = clean_record(MEMORY, raw)
  assert cleaned['VGROW'] is None and cleaned['RGROW'] is None
  assert 'some_new_field' not in cleaned


@pytest.mark.parametrize('field, value, message', [
    ('machine', None, 'machine: required field is missing'),
    ('PID', '', 'PID: required field is missing'),
    ('CMD', None, 'CMD: required field is missing'),
    ('PID', '4.5', 'PID: \'4.5\' is not an integer'),
    ('VSIZE', 'lots', 'VSIZE: not a number'),
    ('VSIZE', {'nested': 1}, 'VSIZE: dict where a number is expected'),
    ('CMD', ['a'], 'CMD: list where a string is expected'),
    ('ts', '9e99', 'ts: number out of range'),
    ('CMD', 'x' * 5000, 'CMD: string longer than'),
])
def test_bad_fields_raise_an_error_naming_the_field(field, value, message):
  raw = memory_record(3, 42, 'java', 1_700_000_000, False)
  raw[field] = value
  with pytest.raises(CleaningError, match=message.replace('(', r'\(')):
    clean_record(MEMORY, raw)


def test_network_record_keeps_strings_and_counts():
  cleaned = clean_record(NETWORK, network_record(5, attack=True))
  assert cleaned['protocol_type'] == 'icmp' and cleaned['service'] == 'ecr_i'
  assert cleaned['src_bytes'] == 1032 and cleaned['same_srv_rate'] == 1.0
  assert cleaned['label'] == 'smurf.'


def test_a_record_that_is_not_an_object_is_refused():
  with pytest.raises(CleaningError, match='expected a JSON object, got list'):
    clean_record(NETWORK, [1, 2])


@pytest.mark.parametrize('text', [
    '1' * 5000 + 'x', '1' * 100_000 + 'x', '1.' + '1' * 100_000 + 'x', '1e' + '1' * 100_000 + 'x',
    '+' + '9' * 50_000 + 'K!', '.' + '5' * 100_000 + 'e'])
def test_long_digit_strings_are_refused_in_linear_time(text):
  """The number pattern once backtracked quadratically: '1' * 5000 + 'x' took seconds. Now
  the length bound refuses it at once, and the pattern itself is linear when called alone."""
  started = time.perf_counter()
  with pytest.raises(CleaningError, match='longer than 64'):
    parse_number(text)
  assert time.perf_counter() - started < 0.01
  started = time.perf_counter()
  assert _MESSY_NUMBER.match(text) is None
  assert time.perf_counter() - started < 0.05, 'the pattern backtracks'


def test_numeric_strings_up_to_the_bound_still_parse():
  assert parse_number(' ' + '0' * (MAX_NUMBER_LENGTH - 1) + '7 ') == 7.0
  assert parse_number('0.' + '5' * (MAX_NUMBER_LENGTH - 3) + 'K') == pytest.approx(5000 / 9)
