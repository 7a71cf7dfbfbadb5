"""The model signing keys (model/signing.py, docs/model-registry.md).

    python -m pipelines.keys generate                  # the default pair, if it does not exist
    python -m pipelines.keys generate --signing_key new.key --public_key new.pub
    python -m pipelines.keys show                      # the key ids readers trust

The retrain job signs with the private key; the stream job and the dashboard verify with the
public one. ``generate`` never overwrites a key. ``show`` lists the ids of the keys in a public
key file (and of a signing key's public half with --signing_key), as they appear in manifests
(``signing_key_id``) and in refusal log lines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from model import signing


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m pipelines.keys', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  for name, text in (('generate', 'create an Ed25519 key pair (never overwrites)'),
                     ('show', 'print the key ids and the public key PEM')):
    command = commands.add_parser(name, help=text)
    command.add_argument('--signing_key', default=None,
                         help=f'private key file (default: ${signing.SIGNING_KEY_ENV}, else '
                         f'~/.config/attack-detection/{signing.SIGNING_KEY_FILE})')
    command.add_argument('--public_key', default=None,
                         help=f'public key file (default: ${signing.PUBLIC_KEY_ENV}, else '
                         f'~/.config/attack-detection/{signing.PUBLIC_KEY_FILE})')
  args = parser.parse_args(argv)
  try:
    if args.command == 'generate':
      private = signing.signing_key_path(args.signing_key)
      public = signing.public_key_path(args.public_key)
      key = signing.generate(private, public)
      print(f'signing key {private} (keep it to the retrain job; owner-only)')
      print(f'public key  {public} (for the stream job and the dashboard)')
      print(f'key id      {key.key_id}')
      return 0
    if args.signing_key:
      key = signing.SigningKey.load(args.signing_key)
      print(f'{key.key_id}  {key.path} (signing key)')
      sys.stdout.write(key.public_pem().decode('ascii'))
      return 0
    keys = signing.reader_keys(args.public_key)
    for kid in keys.key_ids:
      print(f'{kid}  {keys.source}')
    with open(keys.source, 'rb') as f:
      sys.stdout.write(f.read().decode('ascii', errors='replace'))
    return 0
  except (signing.KeyFileError, FileExistsError) as e:
    print(f'pipelines.keys: {e}', file=sys.stderr)
    return 1


if __name__ == '__main__':
  sys.exit(main())
