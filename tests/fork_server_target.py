"""A fork server whose children run a small function instead of an SDK worker, for
tests/test_fork_server.py::

    python -m tests.fork_server_target SOCKET [--with-thread]

Each child prints what it got (argv, one environment variable, working directory, pid, its
random draw, its threads, its open descriptors) as one JSON line on the launcher's stdout, then
``argv[0]``: ``exit N`` exits with N, ``exec N`` execs a Python that exits with N, ``sleep``
sleeps until signalled.
"""

import json
import os
import random
import sys
import threading
import time

from pipelines.fork_server import ForkServer, thread_count


def target(argv, launcher):
  print(json.dumps({'argv': argv, 'launcher': launcher, 'pid': os.getpid(), 'cwd': os.getcwd(),
                    'env': os.environ.get('FORK_TEST_VALUE'), 'random': random.getrandbits(64),
                    'threads': thread_count(), 'fds': sorted(os.listdir('/proc/self/fd')),
                    'cmdline': open('/proc/self/cmdline', 'rb').read().decode()}),
        flush=True)
  if argv[0] == 'sleep':
    time.sleep(120)
  if argv[0] == 'exec':  # as a worker over staged packages does: a fresh interpreter, same pid
    os.execv(sys.executable, [sys.executable, '-c', f'import sys; sys.exit({int(argv[1])})'])
  sys.exit(int(argv[1]))


if __name__ == '__main__':
  server = ForkServer(sys.argv[1], target)
  if '--with-thread' in sys.argv:
    threading.Thread(target=time.sleep, args=(120,), daemon=True, name='stray').start()
  print('ready', flush=True)
  server.serve()
