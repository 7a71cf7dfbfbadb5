"""Ed25519 signatures on the registry's manifests: who may publish a model.

The retrain job holds the private key and signs every manifest it publishes; the stream job
and the dashboard hold only public keys and refuse a version whose manifest does not carry a
valid signature by one of them. A manifest names its model file's sha256, so the signature
covers the model too, and it is checked before anything is deserialised (model/registry.py).

Where the keys are (the first that is set):

* the flags ``--model_signing_key`` (retrain) and ``--model_public_key`` (readers);
* ``$ATTACK_DETECTION_MODEL_SIGNING_KEY`` / ``$ATTACK_DETECTION_MODEL_PUBLIC_KEY``;
* ``~/.config/attack-detection/model-signing.key`` / ``model-signing.pub`` (under
  ``$XDG_CONFIG_HOME`` when set), which ``python -m pipelines.bootstrap`` creates if missing.

A public key file may hold several PEM keys: during a rotation readers accept the old and the
new one (docs/model-registry.md). Readers never create keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from typing import Iterable, Optional, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (Ed25519PrivateKey,
                                                               Ed25519PublicKey)

ALGORITHM = 'ed25519'
SIGNING_KEY_ENV = 'ATTACK_DETECTION_MODEL_SIGNING_KEY'
PUBLIC_KEY_ENV = 'ATTACK_DETECTION_MODEL_PUBLIC_KEY'
SIGNING_KEY_FILE = 'model-signing.key'
PUBLIC_KEY_FILE = 'model-signing.pub'
# A signature document is a few hundred bytes; anything much larger is not one.
MAX_SIGNATURE_BYTES = 4096
_MAX_KEY_FILE_BYTES = 1 << 20
_PEM_END = b'-----END PUBLIC KEY-----'

log = logging.getLogger(__name__)


class KeyFileError(RuntimeError):
  """A key file is missing or unreadable; the message says how to make one."""


class SignatureError(RuntimeError):
  """A manifest is unsigned, or its signature is not by a trusted key."""


def key_dir() -> str:
  config = os.environ.get('XDG_CONFIG_HOME') or os.path.join(os.path.expanduser('~'), '.config')
  return os.path.join(config, 'attack-detection')


def signing_key_path(path: Optional[str] = None) -> str:
  return path or os.environ.get(SIGNING_KEY_ENV) or os.path.join(key_dir(), SIGNING_KEY_FILE)


def public_key_path(path: Optional[str] = None) -> str:
  return path or os.environ.get(PUBLIC_KEY_ENV) or os.path.join(key_dir(), PUBLIC_KEY_FILE)


def key_id(raw_public: bytes) -> str:
  """A short name for a public key, written beside each signature and in log lines."""
  return hashlib.sha256(raw_public).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
  return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public: Ed25519PublicKey) -> bytes:
  return public.public_bytes(serialization.Encoding.PEM,
                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _how_to_make_keys() -> str:
  return ('create a key pair with `python -m pipelines.keys generate` (or `python -m '
          'pipelines.bootstrap`, which creates one when missing), or point --model_signing_key / '
          f'--model_public_key (or ${SIGNING_KEY_ENV} / ${PUBLIC_KEY_ENV}) at existing key files; '
          'see docs/model-registry.md')


def _read_key_file(path: str, what: str) -> bytes:
  try:
    with open(path, 'rb') as f:
      data = f.read(_MAX_KEY_FILE_BYTES + 1)
  except OSError as e:
    raise KeyFileError(f'cannot read the model {what} {path}: {e.strerror}; '
                    f'{_how_to_make_keys()}') from None
  if len(data) > _MAX_KEY_FILE_BYTES:
    raise KeyFileError(f'{path} is too large to be a model {what}')
  return data


class SigningKey:
  """The publisher's private key."""

  def __init__(self, private: Ed25519PrivateKey, path: str = '<memory>'):
    self._private = private
    self.path = path
    self.public = PublicKeys([_raw(private.public_key())])
    self.key_id = self.public.key_ids[0]

  @classmethod
  def load(cls, path: Optional[str] = None) -> 'SigningKey':
    path = signing_key_path(path)
    data = _read_key_file(path, 'signing key')
    try:
      private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
      raise KeyFileError(f'{path} is not an unencrypted PEM private key: {e}') from None
    if not isinstance(private, Ed25519PrivateKey):
      raise KeyFileError(f'{path} is not an Ed25519 key ({type(private).__name__})')
    return cls(private, path)

  @classmethod
  def generate(cls) -> 'SigningKey':
    return cls(Ed25519PrivateKey.generate())

  def private_pem(self) -> bytes:
    return self._private.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

  def public_pem(self) -> bytes:
    return public_pem(self._private.public_key())

  def sign(self, data: bytes) -> bytes:
    """The signature document for ``data`` (JSON: algorithm, key id, base64 signature)."""
    return json.dumps({'algorithm': ALGORITHM, 'key_id': self.key_id,
                       'signature': base64.b64encode(self._private.sign(data)).decode('ascii')},
                      sort_keys=True).encode('utf-8')

  def save(self, private_path: str, public_path: str) -> None:
    """Writes the private key (owner-only) and its public half; refuses to overwrite."""
    for path in (private_path, public_path):
      if os.path.exists(path):
        raise FileExistsError(f'{path} exists; not overwriting a key')
    os.makedirs(os.path.dirname(os.path.abspath(private_path)), mode=0o700, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(public_path)), exist_ok=True)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, 'wb') as f:
      f.write(self.private_pem())
    with open(public_path, 'xb') as f:
      f.write(self.public_pem())
    self.path = private_path


class PublicKeys:
  """The public keys a reader trusts. Holds raw key bytes only, so it pickles: the launcher
  reads the key file and the pipeline carries the keys to its workers."""

  def __init__(self, raw_keys: Iterable[bytes], source: str = '<memory>'):
    self.raw_keys = tuple(bytes(k) for k in raw_keys)
    if not self.raw_keys:
      raise KeyFileError(f'{source} holds no public key; {_how_to_make_keys()}')
    for raw in self.raw_keys:
      if len(raw) != 32:
        raise KeyFileError(f'{source}: an Ed25519 public key has 32 bytes, not {len(raw)}')
    self.source = source
    self.key_ids = tuple(key_id(k) for k in self.raw_keys)

  @classmethod
  def load(cls, path: Optional[str] = None) -> 'PublicKeys':
    """Every PEM public key in the file (readers' default: see the module docstring)."""
    path = public_key_path(path)
    data = _read_key_file(path, 'public key')
    raw_keys = []
    for block in data.split(_PEM_END)[:-1]:
      try:
        public = serialization.load_pem_public_key(block + _PEM_END)
      except (ValueError, TypeError) as e:
        raise KeyFileError(f'{path} holds something that is not a PEM public key: {e}') from None
      if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f'{path} holds a {type(public).__name__}, not an Ed25519 key')
      raw_keys.append(_raw(public))
    return cls(raw_keys, path)

  def __add__(self, other: 'PublicKeys') -> 'PublicKeys':
    raw = list(dict.fromkeys(self.raw_keys + other.raw_keys))
    return PublicKeys(raw, f'{self.source} + {other.source}')

  def __eq__(self, other):
    return isinstance(other, PublicKeys) and self.raw_keys == other.raw_keys

  def __hash__(self):
    return hash(self.raw_keys)

  def describe(self) -> str:
    return f'{self.source} (key ids {", ".join(self.key_ids)})'

  def verify(self, data: bytes, document: Optional[bytes]) -> str:
    """The id of the trusted key that signed ``data``; SignatureError otherwise."""
    if document is None:
      raise SignatureError('it is unsigned (no signature file)')
    if len(document) > MAX_SIGNATURE_BYTES:
      raise SignatureError('its signature file is too large to be one')
    try:
      parsed = json.loads(document)
      algorithm, claimed = parsed['algorithm'], str(parsed.get('key_id', ''))[:64]
      signature = base64.b64decode(parsed['signature'], validate=True)
    except (ValueError, TypeError, KeyError) as e:
      raise SignatureError(f'its signature file is malformed ({type(e).__name__})') from None
    if algorithm != ALGORITHM:
      raise SignatureError(f'its signature is not {ALGORITHM} ({str(algorithm)[:32]!r})')
    for raw, kid in zip(self.raw_keys, self.key_ids):
      try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
        return kid
      except InvalidSignature:
        continue
    known = 'a trusted key id' if claimed in self.key_ids else f'key id {claimed!r}'
    raise SignatureError(f'its signature (claiming {known}) does not verify against the '
                         f'trusted public keys {self.describe()}')


def reader_keys(path: Optional[str] = None) -> PublicKeys:
  """The public keys of a reader: ``path`` (--model_public_key), else the default."""
  return PublicKeys.load(path)


def generate(private_path: Optional[str] = None, public_path: Optional[str] = None
             ) -> SigningKey:
  key = SigningKey.generate()
  key.save(signing_key_path(private_path), public_key_path(public_path))
  return key


def ensure_key_pair(private_path: Optional[str] = None, public_path: Optional[str] = None
                    ) -> Optional[SigningKey]:
  """The publisher's key pair, created when neither half exists (``pipelines.bootstrap``: a fresh
  machine's first run). Returns the new key, or None when one was there already. A private key
  without its public file gets the file back; a public key without its private key is an
  error, since a new pair would sign what the readers' key cannot verify."""
  private_path, public_path = signing_key_path(private_path), public_key_path(public_path)
  has_private, has_public = os.path.exists(private_path), os.path.exists(public_path)
  if has_private and not has_public:
    key = SigningKey.load(private_path)
    os.makedirs(os.path.dirname(os.path.abspath(public_path)), exist_ok=True)
    with open(public_path, 'xb') as f:
      f.write(key.public_pem())
    log.info('wrote the public half of %s to %s', private_path, public_path)
    return None
  if has_private:
    return None
  if has_public:
    raise KeyFileError(f'{public_path} exists but its signing key {private_path} does not: '
                    'restore the signing key, or point --model_signing_key at it; a new pair '
                    'would publish models the readers of that public key refuse')
  key = generate(private_path, public_path)
  log.warning('created a model signing key pair: %s (private, keep it to the retrain) and %s '
              '(public, for the stream and the dashboard)', private_path, public_path)
  return key


