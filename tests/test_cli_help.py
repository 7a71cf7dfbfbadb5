"""The job's --help lists every one of its own flags with a description."""

import subprocess
import sys

from pipelines.stream import StreamOptions


def test_stream_help_documents_every_option():
  import argparse
  parser = argparse.ArgumentParser()
  StreamOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  flags = [a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != 'help']
  shown = subprocess.run([sys.executable, '-m', 'pipelines.stream', '--help'],
                         capture_output=True, text=True, check=True).stdout
  for flag in flags + ['--runner', '--flink_master', '--bootstrap_servers']:
    assert flag in shown, flag
  assert all(a.help for a in parser._actions), 'every flag has a description'
