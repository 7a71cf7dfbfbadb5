"""The programs that run on synthetic hosts: daemons, transient jobs, attackers and their
benign look-alikes. :mod:`generator.synthetic_host` turns them into atop-like samples.

Sizes are bytes, CPU is atop's per-process percentage (above 100 with several busy threads),
fault rates are per second at the program's median CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

MB = 1e6
GB = 1e9


@dataclasses.dataclass(frozen=True)
class Program:
  kind: str
  cmds: tuple[str, ...]  # CMD values it shows up as (attackers often borrow benign names)
  attack: bool = False
  threads: tuple[int, int] = (1, 1)
  cpu: tuple[float, float] = (0.2, 1.0)  # median %, log-normal sigma per sample
  rsize: tuple[float, float] = (10 * MB, 0.5)  # median resident size at start, sigma
  vsize_factor: tuple[float, float] = (2.0, 6.0)  # VSIZE / RSIZE
  vstext: float = 1 * MB
  growth: float = 0.0  # mean relative RSIZE growth per second
  minflt: float = 5.0
  majflt: float = 0.0
  disk_wait: float = 0.0  # share of samples in state D
  lifetime: Optional[tuple[float, float]] = None  # median seconds, sigma; None: a daemon
  policy: tuple[tuple[str, float], ...] = (('norm', 1.0),)
  nice: tuple[tuple[int, float], ...] = ((0, 1.0),)
  kernel: bool = False  # a kernel thread: no memory of its own, state I


def _p(**kw) -> Program:
  return Program(**kw)


DAEMONS = {
    'systemd': _p(kind='systemd', cmds=('systemd',), rsize=(12 * MB, .2), vstext=1.4 * MB),
    'sshd': _p(kind='sshd', cmds=('sshd',), rsize=(7 * MB, .3), vstext=.9 * MB),
    'cron': _p(kind='cron', cmds=('cron',), cpu=(.05, 1), rsize=(3 * MB, .2)),
    'rsyslogd': _p(kind='rsyslogd', cmds=('rsyslogd',), threads=(3, 4), rsize=(5 * MB, .3)),
    'dbus': _p(kind='dbus', cmds=('dbus-daemon',), rsize=(5 * MB, .2)),
    'kworker': _p(kind='kworker', cmds=('kworker/0:1', 'kworker/1:2', 'kworker/u8:3'),
                  cpu=(.3, 1.5), rsize=(0, 0), kernel=True),
    'kswapd': _p(kind='kswapd', cmds=('kswapd0',), cpu=(.1, 2), rsize=(0, 0), kernel=True),
    'nginx': _p(kind='nginx', cmds=('nginx',), cpu=(3, 1), rsize=(20 * MB, .4), minflt=40),
    'php-fpm': _p(kind='php-fpm', cmds=('php-fpm8.1',), cpu=(5, 1.2), rsize=(60 * MB, .5),
                  minflt=200),
    'app': _p(kind='app', cmds=('python3', 'node', 'gunicorn'), threads=(2, 12), cpu=(8, 1),
              rsize=(150 * MB, .6), minflt=300),
    'postgres': _p(kind='postgres', cmds=('postgres',), cpu=(4, 1.4), rsize=(300 * MB, .8),
                   minflt=500, majflt=3, disk_wait=.05),
    'mysqld': _p(kind='mysqld', cmds=('mysqld',), threads=(30, 60), cpu=(15, 1),
                 rsize=(1.5 * GB, .4), minflt=800, majflt=5, disk_wait=.05),
    'java': _p(kind='java', cmds=('java',), threads=(40, 200), cpu=(20, 1.2),
               rsize=(1.2 * GB, .5), vsize_factor=(3, 6), minflt=2000, growth=.0005),
    'bash': _p(kind='bash', cmds=('bash',), cpu=(.02, 1.5), rsize=(5 * MB, .2)),
    'vim': _p(kind='vim', cmds=('vim',), cpu=(.3, 1.5), rsize=(12 * MB, .3)),
    'Xorg': _p(kind='Xorg', cmds=('Xorg',), cpu=(3, 1), rsize=(80 * MB, .3),
               policy=(('norm', .7), ('fifo', .3))),
    'pulseaudio': _p(kind='pulseaudio', cmds=('pulseaudio',), cpu=(1, .7), rsize=(15 * MB, .2),
                     policy=(('rr', .6), ('norm', .4)), nice=((-11, 1.0),)),
    'browser': _p(kind='browser', cmds=('firefox', 'chrome'), threads=(30, 80), cpu=(25, 1.1),
                  rsize=(900 * MB, .6), vsize_factor=(4, 12), minflt=3000, majflt=2,
                  growth=.001),
    'containerd': _p(kind='containerd', cmds=('containerd', 'dockerd'), threads=(10, 30),
                     cpu=(1, 1), rsize=(50 * MB, .3)),
}

# Short-lived jobs: benign, several of them resembling an attacker on purpose.
TRANSIENT = {
    'shell_tool': _p(kind='shell_tool', cmds=('ls', 'grep', 'sed', 'awk', 'cat', 'ps', 'sh'),
                     cpu=(2, 1.5), rsize=(3 * MB, .3), lifetime=(3, .8)),
    'compiler': _p(kind='compiler', cmds=('cc1plus', 'cc1', 'rustc', 'ld'), cpu=(95, .15),
                   rsize=(250 * MB, .8), growth=.03, minflt=20000, lifetime=(25, .8),
                   vstext=25 * MB),
    'git': _p(kind='git', cmds=('git',), cpu=(30, 1), rsize=(40 * MB, .6), majflt=50,
              disk_wait=.2, lifetime=(5, 1)),
    'backup': _p(kind='backup', cmds=('tar', 'gzip', 'rsync'), cpu=(40, .6), rsize=(8 * MB, .5),
                 majflt=800, minflt=2000, disk_wait=.4, lifetime=(90, .6)),
    'pg_dump': _p(kind='pg_dump', cmds=('pg_dump',), cpu=(30, .6), rsize=(100 * MB, .5),
                  growth=.02, majflt=300, minflt=5000, disk_wait=.3, lifetime=(60, .6)),
    'scanner': _p(kind='scanner', cmds=('clamscan', 'updatedb', 'find'), cpu=(60, .5),
                  rsize=(400 * MB, 1), majflt=1000, minflt=8000, disk_wait=.35,
                  lifetime=(120, .6), nice=((19, .6), (0, .4)), policy=(('norm', .5), ('idle', .5))),
    'ffmpeg': _p(kind='ffmpeg', cmds=('ffmpeg',), threads=(4, 16), cpu=(300, .3),
                 rsize=(300 * MB, .3), minflt=3000, lifetime=(240, .8)),
    'training': _p(kind='training', cmds=('python3',), threads=(4, 16), cpu=(250, .4),
                   rsize=(2 * GB, .5), minflt=5000, growth=.002, lifetime=(600, .8),
                   nice=((0, .6), (10, .4))),
}

# What a machine runs all the time, by role; transient jobs it starts now and then.
PERSONAS = {
    'web': (('systemd', 'sshd', 'cron', 'rsyslogd', 'kworker', 'kworker', 'nginx', 'nginx',
             'nginx', 'php-fpm', 'php-fpm', 'app', 'containerd'),
            {'shell_tool': .6, 'backup': .15, 'git': .15, 'scanner': .1}),
    'db': (('systemd', 'sshd', 'cron', 'rsyslogd', 'kworker', 'kswapd', 'postgres', 'postgres',
            'postgres', 'postgres', 'mysqld', 'bash'),
           {'shell_tool': .5, 'pg_dump': .3, 'backup': .2}),
    'dev': (('systemd', 'sshd', 'cron', 'dbus', 'kworker', 'bash', 'bash', 'vim', 'java',
             'app', 'containerd'),
            {'compiler': .45, 'git': .2, 'shell_tool': .2, 'training': .1, 'ffmpeg': .05}),
    'desktop': (('systemd', 'dbus', 'kworker', 'Xorg', 'pulseaudio', 'browser', 'browser',
                 'bash', 'vim'),
                {'shell_tool': .4, 'scanner': .25, 'ffmpeg': .15, 'compiler': .1,
                 'training': .1}),
}

# Attacking programs. Names overlap with benign ones (python3, bash, kswapd0, java) so that
# CMD alone does not give them away.
ATTACKS = {
    'cryptominer': _p(kind='cryptominer', attack=True,
                      cmds=('xmrig', 'kdevtmpfsi', 'kswapd0', 'sysupdate', 'python3', 'java'),
                      threads=(2, 8), cpu=(240, .35), rsize=(2.2 * GB, .1),
                      vsize_factor=(1.1, 1.4), minflt=400, vstext=4 * MB,
                      policy=(('norm', .6), ('batch', .25), ('idle', .15)),
                      nice=((0, .5), (19, .35), (10, .15))),
    'reverse_shell': _p(kind='reverse_shell', attack=True,
                        cmds=('bash', 'sh', 'nc', 'python3', 'perl', 'socat'),
                        cpu=(.5, 1.8), rsize=(6 * MB, .5), majflt=20, minflt=200),
    'memory_scraper': _p(kind='memory_scraper', attack=True,
                         cmds=('mimipenguin', 'python3', 'gdb', 'dd', 'gcore', 'cat'),
                         cpu=(60, .5), rsize=(40 * MB, .6), growth=.08, majflt=1500,
                         minflt=30000, disk_wait=.4),
    'fork_bomb': _p(kind='fork_bomb', attack=True, cmds=('bash', 'sh', 'perl', 'python3', ':'),
                    cpu=(6, 1.0), rsize=(3.5 * MB, .2), vsize_factor=(2, 3), minflt=800),
}
# Relative frequency of attack episodes, and their duration (median s, sigma).
EPISODES = {'cryptominer': (.3, (300, .6)), 'reverse_shell': (.25, (400, .7)),
            'memory_scraper': (.3, (60, .5)), 'fork_bomb': (.15, (20, .4))}
