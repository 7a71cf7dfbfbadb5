"""The hot-path uuid5 is RFC 4122's uuid5 in the product's namespace, for every name: the ids
of records already archived must never change (exactly-once consumers compare them)."""

import hashlib
import uuid

from transforms.ids import UUID_NAMESPACE, record_id, uuid5


def _reference(name: str) -> str:
  """uuid5 by its definition; also for names with lone surrogates, which uuid.uuid5 refuses."""
  digest = hashlib.sha1(UUID_NAMESPACE.bytes + name.encode('utf-8', 'surrogatepass')).digest()
  return str(uuid.UUID(bytes=digest[:16], version=5))


def test_uuid5_is_rfc_4122s_for_every_variant_digit():
  names = [f'record|network|net-{i}|{hashlib.sha256(str(i).encode()).hexdigest()}|'
           for i in range(3000)]
  seen_variant_digits = set()
  for name in names:
    assert uuid5(name) == str(uuid.uuid5(UUID_NAMESPACE, name))
    seen_variant_digits.add(hashlib.sha1(UUID_NAMESPACE.bytes + name.encode()).hexdigest()[16])
  assert len(seen_variant_digits) == 16  # every value of the nibble the variant bits go into


def test_uuid5_of_names_uuid_refuses():
  for name in ('\udc80', 'a\ud800b', '\x00', 'é☃' * 50):
    assert uuid5(name) == _reference(name)


def test_a_record_id_is_stable():
  # A replay of the same message must give the id archived the first time.
  assert record_id('network', 'net-1', 'ab' * 32, None) == uuid5(
      f"record|network|net-1|{'ab' * 32}|")
  assert record_id('network', 'net-1', 'ab' * 32, None) == (
      str(uuid.uuid5(UUID_NAMESPACE, f"record|network|net-1|{'ab' * 32}|")))
