"""Per-label samplers of KDD Cup 1999-like connection records (used by synthetic_network).

Each family function takes a :class:`~generator.sampling.Sampler` and ``n`` and returns a dict
of the 41 KDD feature columns as numpy arrays. What a family looks like follows the published
descriptions of the KDD 1999 attacks (Lee & Stolfo's features, the DARPA 1998 attack list):

* normal: many services with their own byte sizes, connection counts and login behaviour,
  plus a few percent of busy servers, flaky hosts and admin scans that look like attacks;
* DoS: smurf (ICMP echo-reply flood), neptune (SYN flood on many ports), back (huge HTTP
  requests), teardrop / pod (bad fragments), land (source = destination);
* probe: satan, ipsweep, portsweep, nmap (many services or hosts, rejected connections);
* R2L / U2R: password guessing, warez, buffer overflows, rootkits ... whose traffic-window
  features are those of ordinary sessions: only content features (hot, root_shell,
  num_failed_logins, file creations, durations) tell them apart, and normal sessions show
  those too, now and then.

Attacks are never perfectly clean: a share of each attack family has the traffic-window
features of normal traffic (slow or blended attacks), see ``CAMOUFLAGE``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from generator.sampling import Sampler
from schemas.records import FLOAT, KDD_FEATURES, NETWORK, STR

Columns = dict[str, np.ndarray]

# The traffic-window features (KDD's "time-based" and "host-based" features), in file order.
WINDOW_FEATURES = KDD_FEATURES[KDD_FEATURES.index('count'):]

_UDP = {'domain_u', 'private', 'other', 'ntp_u', 'tftp_u'}
_ICMP = {'ecr_i', 'eco_i', 'urp_i', 'tim_i', 'red_i', 'urh_i'}
# TCP services an attacker sweeps through (neptune, satan, portsweep hit most of KDD's 70).
SCANNED_SERVICES = (
    'private', 'http', 'smtp', 'ftp', 'ftp_data', 'telnet', 'finger', 'auth', 'pop_3', 'imap4',
    'domain', 'sunrpc', 'netbios_ns', 'netbios_dgm', 'netbios_ssn', 'uucp', 'uucp_path',
    'courier', 'csnet_ns', 'ctf', 'daytime', 'discard', 'echo', 'efs', 'exec', 'gopher',
    'hostnames', 'http_443', 'iso_tsap', 'klogin', 'kshell', 'ldap', 'link', 'login', 'mtp',
    'name', 'netstat', 'nnsp', 'nntp', 'pop_2', 'printer', 'remote_job', 'rje', 'shell',
    'sql_net', 'ssh', 'supdup', 'systat', 'time', 'vmnet', 'whois', 'Z39_50', 'bgp', 'other',
    'IRC', 'X11', 'urp_i')

# Normal traffic per service: weight, src_bytes (median, sigma), dst_bytes (median, sigma,
# share non-zero), count (median, sigma), logged-in share, same-source-port beta (a, b).
_NORMAL = {
    'http': (.62, (230, .35), (1900, 1.0, .97), (6, 1.0), .98, (1, 30)),
    'smtp': (.10, (1100, .6), (330, .2, .97), (2, .7), .97, (1, 15)),
    'domain_u': (.06, (44, .1), (100, .3, 1), (120, .8), 0, (1, 10)),
    'private': (.06, (105, .3), (105, .3, .9), (60, 1.2), 0, (1, 5)),
    'ftp_data': (.04, (2000, 2.0), (2000, 1.5, .3), (3, 1.0), .95, (4, 2)),
    'other': (.025, (40, 1.0), (60, 1.5, .5), (20, 1.5), 0, (1, 5)),
    'ftp': (.02, (300, 1.0), (1000, 1.0, .9), (2, .8), .95, (1, 10)),
    'telnet': (.01, (500, 1.5), (3000, 1.5, .95), (1, .6), .9, (1, 10)),
    'finger': (.005, (8, .5), (400, .8, .9), (3, .8), .5, (1, 10)),
    'ecr_i': (.006, (30, 1.2), (0, 0, 0), (3, 1.2), 0, (2, 3)),
    'urp_i': (.005, (100, .5), (0, 0, 0), (1, .5), 0, (2, 2)),
    'eco_i': (.004, (18, .5), (0, 0, 0), (1, .7), 0, (3, 2)),
    'auth': (.004, (25, .3), (50, .5, .5), (2, .7), .6, (1, 10)),
    'ntp_u': (.004, (48, .01), (48, .01, 1), (2, 1.0), 0, (1, 3)),
    'pop_3': (.002, (25, .5), (3000, 1.5, .9), (2, .7), .9, (1, 10)),
    'imap4': (.001, (60, .8), (4000, 1.5, .9), (2, .7), .9, (1, 10)),
    'IRC': (.001, (200, 1.0), (500, 1.5, .9), (1, .5), .9, (1, 10)),
    'X11': (.001, (300, 1.5), (3000, 1.5, .9), (1, .5), .9, (1, 10)),
    'time': (.001, (0, 0), (4, .1, .5), (1, .5), 0, (1, 10)),
    'domain': (.0005, (40, .5), (100, .5, .9), (3, 1.0), 0, (1, 10)),
    'tftp_u': (.0003, (30, .5), (0, 0, 0), (1, .5), 0, (1, 5)),
}
_NORMAL_WEIGHTS = {service: row[0] for service, row in _NORMAL.items()}
_TCP_FLAGS = {'SF': .94, 'REJ': .025, 'S0': .01, 'RSTO': .008, 'RSTR': .008, 'S1': .004,
              'SH': .002, 'S3': .002, 'RSTOS0': .0005, 'OTH': .0005}
_SYN_ERRORS = {'S0', 'S1', 'SH', 'RSTOS0'}
_REJECTS = {'REJ', 'RSTO', 'RSTR'}


def blank(n: int) -> Columns:
  """All 41 features zero (strings empty), typed per the network schema."""
  columns = {}
  for name in KDD_FEATURES:
    kind = NETWORK.field(name).kind
    if kind == STR:
      columns[name] = np.full(n, '', dtype=object)
    else:
      columns[name] = np.zeros(n, dtype=np.float64 if kind == FLOAT else np.int64)
  return columns


def protocol_of(services: np.ndarray, udp_share: float = 0.0,
                s: Sampler | None = None) -> np.ndarray:
  """The protocol a service runs on; ``private`` is UDP with probability ``udp_share``."""
  proto = np.full(len(services), 'tcp', dtype=object)
  proto[np.isin(services, list(_UDP - {'private'}))] = 'udp'
  proto[np.isin(services, list(_ICMP))] = 'icmp'
  if s is not None and udp_share:
    private = services == 'private'
    proto[private & s.coin(len(services), udp_share)] = 'udp'
  return proto


def _flags(s: Sampler, proto: np.ndarray) -> np.ndarray:
  flags = s.pick(len(proto), _TCP_FLAGS)
  flags[proto != 'tcp'] = 'SF'
  return flags


def window(s: Sampler, n: int, *, count, srv_count, serror, rerror, same_srv, diff_srv,
           srv_diff_host, host_count, host_srv_count, host_diff_srv, host_same_src_port,
           host_srv_diff_host, host_serror, host_rerror) -> Columns:
  """The 19 traffic-window features from their main drivers; the srv_* and dst_host_*
  variants follow their drivers with a little independent noise, as in the real data."""
  def near(x, scale=0.03):
    x = np.broadcast_to(np.asarray(x, dtype=float), (n,))
    return x + s.coin(n, 0.3) * s.rng.normal(0.0, scale, n)
  count = np.clip(np.broadcast_to(count, (n,)), 0, 511)
  host_count = np.clip(np.broadcast_to(host_count, (n,)), 0, 255)
  host_srv_count = np.clip(np.broadcast_to(host_srv_count, (n,)), 0, 255)
  host_same_srv = np.minimum(host_srv_count, host_count) / np.maximum(host_count, 1)
  values = {
      'count': count,
      'srv_count': np.clip(np.broadcast_to(srv_count, (n,)), 0, 511),
      'serror_rate': near(serror), 'srv_serror_rate': near(serror),
      'rerror_rate': near(rerror), 'srv_rerror_rate': near(rerror),
      'same_srv_rate': near(same_srv), 'diff_srv_rate': near(diff_srv),
      'srv_diff_host_rate': near(srv_diff_host),
      'dst_host_count': host_count, 'dst_host_srv_count': host_srv_count,
      'dst_host_same_srv_rate': near(host_same_srv, 0.05),
      'dst_host_diff_srv_rate': near(host_diff_srv),
      'dst_host_same_src_port_rate': near(host_same_src_port),
      'dst_host_srv_diff_host_rate': near(host_srv_diff_host),
      'dst_host_serror_rate': near(host_serror), 'dst_host_srv_serror_rate': near(host_serror),
      'dst_host_rerror_rate': near(host_rerror), 'dst_host_srv_rerror_rate': near(host_rerror),
  }
  return {name: np.asarray(values[name]) for name in WINDOW_FEATURES}


def normal_window(s: Sampler, services: np.ndarray, flags: np.ndarray) -> Columns:
  """Traffic-window features of ordinary connections to ``services`` with ``flags``."""
  n = len(services)
  count = np.ones(n, dtype=np.int64)
  same_src_port = np.zeros(n)
  for service in np.unique(services):
    rows = services == service
    k = int(rows.sum())
    _, _, _, (median, sigma), _, (a, b) = _NORMAL.get(service, _NORMAL['other'])
    count[rows] = s.logn(k, median, sigma, 1, 511)
    same_src_port[rows] = s.beta(k, a, b)
  syn_error = np.isin(flags, list(_SYN_ERRORS))
  rejected = np.isin(flags, list(_REJECTS))
  serror = np.where(syn_error, s.beta(n, 3, 1.5), s.beta(n, .3, 30))
  rerror = np.where(rejected, s.beta(n, 3, 1.5), s.beta(n, .3, 30))
  same_srv = np.where(np.isin(services, ['private', 'other']), s.beta(n, 5, 2),
                      1 - s.beta(n, .5, 10))
  http = services == 'http'
  busy = s.coin(n, .35)
  host_srv_count = np.where(http & s.coin(n, .7), 255, s.logn(n, 40, 1.2, 1, 255))
  return window(
      s, n, count=count, srv_count=np.clip(count * s.logf(n, 1.2, .5), 1, 511).astype(np.int64),
      serror=serror, rerror=rerror, same_srv=same_srv,
      diff_srv=(1 - same_srv) * s.rng.uniform(.5, 1.2, n),
      srv_diff_host=np.where(http, s.beta(n, .7, 5), s.beta(n, .3, 10)),
      host_count=np.where(busy, 255, s.uni(n, 1, 255)), host_srv_count=host_srv_count,
      host_diff_srv=s.beta(n, .5, 15), host_same_src_port=same_src_port,
      host_srv_diff_host=s.beta(n, .5, 15),
      host_serror=np.where(syn_error | s.coin(n, .05), s.beta(n, 2, 2), s.beta(n, .3, 30)),
      host_rerror=np.where(rejected | s.coin(n, .05), s.beta(n, 2, 2), s.beta(n, .3, 30)))


def _set(c: Columns, rows: np.ndarray, values: Columns) -> None:
  for name, v in values.items():
    c[name][rows] = v if np.ndim(v) == 0 else np.asarray(v)[: int(np.sum(rows))]


def normal(s: Sampler, n: int) -> Columns:
  c = blank(n)
  service = s.pick(n, _NORMAL_WEIGHTS)
  c['service'] = service
  c['protocol_type'] = proto = protocol_of(service, .85, s)  # KDD's normal 'private' is mostly UDP
  c['flag'] = flags = _flags(s, proto)
  completed = flags == 'SF'
  logged = np.zeros(n, dtype=bool)
  for svc in np.unique(service):
    rows = service == svc
    k = int(rows.sum())
    _, (src_m, src_s), (dst_m, dst_s, dst_p), _, login_p, _ = _NORMAL[svc]
    c['src_bytes'][rows] = s.logn(k, src_m, src_s) if src_m else 0
    c['dst_bytes'][rows] = s.logn(k, dst_m, dst_s) * s.coin(k, dst_p) if dst_m else 0
    logged[rows] = s.coin(k, login_p)
  # Connections that never completed carry no payload and no login.
  c['src_bytes'][~completed] = np.where(s.coin(n, .1), s.logn(n, 20, 1), 0)[~completed]
  c['dst_bytes'][~completed] = 0
  c['logged_in'] = (logged & completed).astype(np.int64)
  interactive = np.isin(service, ['telnet', 'ftp', 'ftp_data', 'pop_3', 'imap4', 'X11', 'IRC'])
  c['duration'] = np.where(interactive & s.coin(n, .7), s.logn(n, 60, 1.8),
                           np.where(s.coin(n, .08), s.logn(n, 2, 1.5), 0))
  # Ordinary sessions sometimes show what R2L / U2R attacks show: hot indicators, a failed
  # login, an admin's root shell, anonymous ftp, file creations, a fragmented packet.
  shell = np.isin(service, ['telnet', 'ftp', 'login', 'X11'])
  c['hot'] = np.where(s.coin(n, np.where(shell, .25, .02)), s.logn(n, 2, .8, 1, 30), 0)
  c['num_failed_logins'] = (shell & s.coin(n, .02)).astype(np.int64)
  c['root_shell'] = (shell & s.coin(n, .02)).astype(np.int64)
  c['su_attempted'] = (shell & s.coin(n, .01)).astype(np.int64)
  c['num_root'] = np.where(shell & s.coin(n, .04), s.logn(n, 3, 1, 1, 50), 0)
  c['num_compromised'] = np.where(s.coin(n, np.where(shell, .03, .003)), 1, 0)
  c['num_file_creations'] = np.where(shell & s.coin(n, .06), s.logn(n, 2, .8, 1, 30), 0)
  c['num_shells'] = (shell & s.coin(n, .01)).astype(np.int64)
  c['num_access_files'] = np.where(shell & s.coin(n, .03), s.uni(n, 1, 3), 0)
  c['is_guest_login'] = (np.isin(service, ['ftp', 'ftp_data']) & s.coin(n, .08)).astype(np.int64)
  c['wrong_fragment'] = np.where(s.coin(n, .0005), 1, 0)
  c['land'] = np.where(s.coin(n, .0001), 1, 0)
  c['urgent'] = np.where(shell & s.coin(n, .005), 1, 0)
  c.update(normal_window(s, service, flags))
  _lookalikes(s, c)
  return c


def _lookalikes(s: Sampler, c: Columns) -> None:
  """Legitimate traffic whose window features look like an attack's (labelled normal)."""
  n = len(c['service'])
  kind = s.rng.choice(4, size=n, p=[.975, .013, .007, .005])
  busy = kind == 1  # a popular server: hundreds of connections, all to one service
  k = int(busy.sum())
  count = s.logn(k, 300, .4, 50, 511)
  _set(c, busy, {'count': count, 'srv_count': np.clip(count + s.uni(k, -20, 20), 1, 511),
                 'same_srv_rate': 1 - s.beta(k, .5, 20), 'dst_host_count': 255,
                 'dst_host_srv_count': np.where(s.coin(k, .8), 255, s.uni(k, 100, 255)),
                 'dst_host_same_srv_rate': 1 - s.beta(k, .5, 20),
                 'dst_host_same_src_port_rate': s.beta(k, 1, 3)})
  flaky = kind == 2  # an overloaded or half-dead host: connections time out half-open
  k = int(flaky.sum())
  c['flag'][flaky] = s.pick(k, {'S0': .5, 'SF': .3, 'REJ': .2})
  _set(c, flaky, {'serror_rate': s.beta(k, 4, 1), 'srv_serror_rate': s.beta(k, 4, 1),
                  'dst_host_serror_rate': s.beta(k, 4, 1),
                  'dst_host_srv_serror_rate': s.beta(k, 4, 1), 'count': s.logn(k, 60, 1, 1, 511),
                  'dst_host_count': 255})
  audit = kind == 3  # an admin's security audit: many ports, mostly refused
  k = int(audit.sum())
  _set(c, audit, {'rerror_rate': s.beta(k, 3, 1), 'srv_rerror_rate': s.beta(k, 3, 1),
                  'same_srv_rate': s.beta(k, 1, 5), 'diff_srv_rate': s.beta(k, 4, 2),
                  'dst_host_diff_srv_rate': s.beta(k, 3, 2), 'dst_host_srv_count': s.uni(k, 1, 20),
                  'dst_host_rerror_rate': s.beta(k, 3, 1)})
  c['src_bytes'][audit & s.coin(n, .7)] = 0


# ---- denial of service ----------------------------------------------------------------------

def smurf(s: Sampler, n: int) -> Columns:
  c = blank(n)
  c['protocol_type'][:] = 'icmp'
  c['service'] = s.pick(n, {'ecr_i': .985, 'eco_i': .01, 'urp_i': .005})
  c['flag'][:] = 'SF'
  c['src_bytes'] = s.mix(n, (.85, 1032), (.12, 520), (.03, s.logn(n, 600, .5, 20, 1480)))
  # Mostly the saturated 2-second window; the ramp-up and tail of a flood count less.
  count = s.mix(n, (.75, 511), (.2, s.uni(n, 150, 511)), (.05, s.logn(n, 30, 1, 1, 511)))
  c.update(window(
      s, n, count=count, srv_count=np.where(s.coin(n, .9), count, count - s.uni(n, 0, 30)),
      serror=0, rerror=0, same_srv=1, diff_srv=0, srv_diff_host=s.beta(n, .2, 20),
      host_count=np.where(s.coin(n, .9), 255, s.uni(n, 10, 255)),
      host_srv_count=np.where(s.coin(n, .9), 255, s.uni(n, 10, 255)), host_diff_srv=0,
      host_same_src_port=np.where(s.coin(n, .8), 1, s.beta(n, 2, 1)),
      host_srv_diff_host=0, host_serror=0, host_rerror=0))
  return c


def neptune(s: Sampler, n: int) -> Columns:
  c = blank(n)
  c['service'] = np.where(s.coin(n, .45), 'private', s.pick(n, SCANNED_SERVICES))
  c['protocol_type'] = protocol_of(c['service'])
  c['flag'] = s.pick(n, {'S0': .9, 'REJ': .08, 'RSTO': .01, 'SH': .005, 'RSTR': .005})
  syn = c['flag'] == 'S0'
  count = s.mix(n, (.95, s.logn(n, 200, .5, 20, 511)), (.05, s.uni(n, 1, 60)))
  srv_count = np.minimum(s.logn(n, 12, .8, 1, 511), count)
  host_srv = s.logn(n, 15, .7, 1, 255)
  c.update(window(
      s, n, count=count, srv_count=srv_count, serror=np.where(syn, 1 - s.beta(n, .3, 10), 0),
      rerror=np.where(syn, 0, 1 - s.beta(n, .3, 10)), same_srv=srv_count / count,
      diff_srv=s.rng.uniform(.04, .09, n), srv_diff_host=0,
      host_count=np.where(s.coin(n, .95), 255, s.uni(n, 20, 255)), host_srv_count=host_srv,
      host_diff_srv=s.rng.uniform(.04, .09, n), host_same_src_port=s.beta(n, .2, 20),
      host_srv_diff_host=0, host_serror=np.where(syn, 1 - s.beta(n, .3, 10), 0),
      host_rerror=np.where(syn, 0, 1 - s.beta(n, .3, 10))))
  return c


def back(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'http': 1}, flags={'SF': .97, 'RSTR': .03})
  c['src_bytes'] = s.mix(n, (.85, 54540), (.15, s.uni(n, 40000, 56000)))
  c['dst_bytes'] = s.mix(n, (.6, 8314), (.4, s.uni(n, 2000, 8400)))
  c['hot'] = s.mix(n, (.9, 2), (.1, s.uni(n, 0, 3)))
  c['num_compromised'] = s.coin(n, .9).astype(np.int64)
  c['duration'] = np.where(s.coin(n, .1), s.uni(n, 1, 5), 0)
  # The web server slows down under the attack: some half-open connections around it.
  slow = s.coin(n, .15)
  c['serror_rate'] = np.where(slow, s.beta(n, 2, 2), c['serror_rate'])
  c['dst_host_serror_rate'] = np.where(slow, s.beta(n, 2, 2), c['dst_host_serror_rate'])
  return c


def teardrop(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'private': 1}, udp_share=1.0)
  c['wrong_fragment'] = s.mix(n, (.97, 3), (.03, 1))
  c['src_bytes'] = s.mix(n, (.95, 28), (.05, s.uni(n, 20, 60)))
  c['dst_bytes'][:] = 0
  count = s.logn(n, 40, 1, 1, 511)
  c['count'], c['srv_count'] = count, count.copy()  # camouflage writes them one by one
  c['dst_host_same_src_port_rate'] = np.where(s.coin(n, .6), 1, c['dst_host_same_src_port_rate'])
  return c


def pod(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'ecr_i': .9, 'tim_i': .1})
  c['wrong_fragment'] = s.mix(n, (.95, 1), (.05, 0))
  c['src_bytes'] = s.mix(n, (.9, 1480), (.1, s.uni(n, 564, 1480)))
  c['dst_bytes'][:] = 0
  return c


def land(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'finger': .3, 'telnet': .2, 'private': .3, 'http': .1, 'smtp': .1},
               flags={'S0': .9, 'SF': .1})
  c['land'] = s.mix(n, (.95, 1), (.05, 0))
  c['src_bytes'][:] = 0
  c['dst_bytes'][:] = 0
  c['logged_in'][:] = 0
  c['count'], c['srv_count'] = s.uni(n, 1, 2), s.uni(n, 1, 2)
  c['serror_rate'] = np.where(c['flag'] == 'S0', 1.0, 0.5)
  c['srv_serror_rate'] = c['serror_rate'].copy()
  return c


# ---- probes ---------------------------------------------------------------------------------

def satan(s: Sampler, n: int) -> Columns:
  c = blank(n)
  c['service'] = s.mix(n, (.85, s.pick(n, SCANNED_SERVICES)), (.1, 'private'), (.05, 'eco_i'))
  c['protocol_type'] = protocol_of(c['service'], .5, s)
  c['flag'] = s.pick(n, {'REJ': .55, 'S0': .15, 'RSTO': .1, 'SF': .15, 'RSTR': .05})
  c['flag'][c['protocol_type'] != 'tcp'] = 'SF'
  probe_bytes = c['flag'] == 'SF'
  c['src_bytes'] = np.where(probe_bytes, s.logn(n, 20, 1.5), 0)
  c['dst_bytes'] = np.where(probe_bytes & s.coin(n, .5), s.logn(n, 100, 1.5), 0)
  rejected = np.isin(c['flag'], list(_REJECTS))
  count = s.mix(n, (.5, s.uni(n, 1, 10)), (.5, s.logn(n, 300, .5, 10, 511)))
  c.update(window(
      s, n, count=count, srv_count=s.uni(n, 1, 5),
      serror=np.where(c['flag'] == 'S0', s.beta(n, 3, 1), s.beta(n, .5, 5)),
      rerror=np.where(rejected, s.beta(n, 5, 1), s.beta(n, 1, 3)), same_srv=s.beta(n, 1, 8),
      diff_srv=s.beta(n, 4, 1), srv_diff_host=s.beta(n, .5, 3),
      host_count=np.where(s.coin(n, .5), 255, s.uni(n, 1, 255)),
      host_srv_count=s.uni(n, 1, 10), host_diff_srv=s.beta(n, 3, 1.5),
      host_same_src_port=np.where(s.coin(n, .3), s.beta(n, 3, 1), s.beta(n, .5, 10)),
      host_srv_diff_host=s.beta(n, .5, 5), host_serror=s.beta(n, .8, 4),
      host_rerror=np.where(rejected, s.beta(n, 4, 1), s.beta(n, 1, 3))))
  return c


def ipsweep(s: Sampler, n: int) -> Columns:
  c = blank(n)
  c['service'] = s.pick(n, {'eco_i': .95, 'ecr_i': .02, 'private': .03})
  c['protocol_type'] = protocol_of(c['service'])
  c['flag'][:] = 'SF'
  c['src_bytes'] = s.mix(n, (.7, 8), (.25, 18), (.05, s.uni(n, 0, 40)))
  host = s.logn(n, 20, 1.2, 1, 255)
  c.update(window(
      s, n, count=s.uni(n, 1, 3), srv_count=s.logn(n, 20, 1, 1, 511), serror=0, rerror=0,
      same_srv=1, diff_srv=0, srv_diff_host=np.where(s.coin(n, .7), 1, s.beta(n, 5, 2)),
      host_count=host, host_srv_count=np.clip(host + s.uni(n, -5, 30), 1, 255),
      host_diff_srv=s.beta(n, .5, 10),
      host_same_src_port=np.where(s.coin(n, .7), 1, s.beta(n, 2, 2)),
      host_srv_diff_host=s.beta(n, 4, 2), host_serror=0, host_rerror=s.beta(n, .3, 20)))
  return c


def portsweep(s: Sampler, n: int) -> Columns:
  c = blank(n)
  c['service'] = np.where(s.coin(n, .9), 'private', s.pick(n, SCANNED_SERVICES))
  c['protocol_type'] = protocol_of(c['service'])
  c['flag'] = s.pick(n, {'REJ': .35, 'RSTR': .35, 'RSTOS0': .15, 'S0': .05, 'SF': .1})
  c['flag'][c['protocol_type'] != 'tcp'] = 'SF'
  c['duration'] = np.where(s.coin(n, .2), s.logn(n, 1000, 1.5), 0)  # slow sweeps
  c['src_bytes'] = np.where(c['flag'] == 'SF', s.uni(n, 0, 10), 0)
  rejected = np.isin(c['flag'], list(_REJECTS))
  c.update(window(
      s, n, count=s.mix(n, (.9, s.uni(n, 1, 2)), (.1, s.uni(n, 3, 50))),
      srv_count=s.uni(n, 1, 3), serror=np.where(rejected, 0, s.beta(n, 2, 2)),
      rerror=np.where(rejected, s.beta(n, 5, 1), s.beta(n, 1, 2)), same_srv=s.beta(n, 2, 1),
      diff_srv=s.beta(n, 1, 2), srv_diff_host=s.beta(n, .5, 3),
      host_count=s.uni(n, 1, 255), host_srv_count=s.uni(n, 1, 3),
      host_diff_srv=s.beta(n, 1, 1), host_same_src_port=np.where(s.coin(n, .8), 1, s.beta(n, 2, 2)),
      host_srv_diff_host=s.beta(n, .5, 5), host_serror=s.beta(n, .5, 3),
      host_rerror=np.where(s.coin(n, .7), 1 - s.beta(n, .3, 10), s.beta(n, 2, 2))))
  return c


def nmap(s: Sampler, n: int) -> Columns:
  c = blank(n)
  c['service'] = s.pick(n, {'eco_i': .4, 'private': .6})
  c['protocol_type'] = protocol_of(c['service'], .35, s)
  c['flag'] = s.pick(n, {'SF': .35, 'SH': .3, 'RSTO': .1, 'S0': .15, 'REJ': .1})
  c['flag'][c['protocol_type'] != 'tcp'] = 'SF'
  c['src_bytes'] = s.mix(n, (.5, 0), (.3, 8), (.2, 18))
  c.update(window(
      s, n, count=s.uni(n, 1, 5), srv_count=s.logn(n, 5, 1, 1, 511), serror=s.beta(n, .5, 3),
      rerror=s.beta(n, .5, 3), same_srv=s.beta(n, 2, 1), diff_srv=s.beta(n, 1, 3),
      srv_diff_host=s.beta(n, 2, 1), host_count=s.logn(n, 10, 1, 1, 255),
      host_srv_count=s.logn(n, 10, 1, 1, 255), host_diff_srv=s.beta(n, 1, 2),
      host_same_src_port=s.beta(n, 3, 1), host_srv_diff_host=s.beta(n, 2, 2),
      host_serror=s.beta(n, .5, 3), host_rerror=s.beta(n, .5, 3)))
  return c


# ---- remote-to-local and user-to-root: ordinary-looking sessions with odd content -----------

def _session(s: Sampler, n: int, services: dict[str, float], flags: dict[str, float] | None = None,
             udp_share: float = 0.0) -> Columns:
  """Ordinary connections to ``services``: normal traffic-window features, no content flags."""
  c = blank(n)
  c['service'] = s.pick(n, services)
  c['protocol_type'] = protocol_of(c['service'], udp_share, s)
  c['flag'] = s.pick(n, flags or {'SF': 1})
  c['flag'][c['protocol_type'] != 'tcp'] = 'SF'
  c['src_bytes'] = s.logn(n, 300, 1.5)
  c['dst_bytes'] = s.logn(n, 1000, 1.5)
  c['logged_in'] = ((c['flag'] == 'SF') & (c['protocol_type'] == 'tcp')).astype(np.int64)
  c.update(normal_window(s, c['service'], c['flag']))
  return c


def guess_passwd(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'telnet': .9, 'pop_3': .05, 'imap4': .05}, {'RSTO': .6, 'SF': .4})
  c['duration'] = s.uni(n, 1, 5)
  c['src_bytes'] = s.uni(n, 120, 135)
  c['dst_bytes'] = s.uni(n, 170, 190)
  c['num_failed_logins'] = s.coin(n, .9).astype(np.int64)
  c['logged_in'][:] = 0
  return c


def buffer_overflow(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'telnet': .8, 'ftp_data': .2})
  c['duration'] = np.where(s.coin(n, .15), s.uni(n, 0, 5), s.logn(n, 150, 1.5))
  c['src_bytes'], c['dst_bytes'] = s.logn(n, 1500, 1.2), s.logn(n, 5000, 1.2)
  c['hot'] = s.uni(n, 0, 4)
  c['root_shell'] = s.coin(n, .7).astype(np.int64)
  c['num_compromised'] = s.coin(n, .5).astype(np.int64)
  c['num_file_creations'] = np.where(s.coin(n, .5), s.uni(n, 1, 2), 0)
  c['num_shells'] = s.coin(n, .2).astype(np.int64)
  c['num_root'] = s.uni(n, 0, 2)
  return c


def warezclient(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'ftp_data': .6, 'ftp': .4})
  ftp = c['service'] == 'ftp'
  c['duration'] = np.where(ftp, s.logn(n, 300, 1), np.where(s.coin(n, .2), s.logn(n, 5, 1), 0))
  c['src_bytes'] = np.where(ftp, s.logn(n, 1500, 1), s.logn(n, 5e4, 1.5))
  c['dst_bytes'] = np.where(ftp, s.logn(n, 3000, 1), 0)
  c['hot'] = np.where(ftp & s.coin(n, .9), s.logn(n, 20, .5, 1, 100), 0)
  c['is_guest_login'] = (ftp & s.coin(n, .9)).astype(np.int64)
  return c


def warezmaster(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'ftp': .9, 'ftp_data': .1})
  c['duration'] = s.logn(n, 600, 1)
  c['src_bytes'], c['dst_bytes'] = s.logn(n, 3e5, 1.5), s.logn(n, 2000, 1)
  c['hot'] = s.logn(n, 20, .5, 0, 100)
  c['is_guest_login'] = s.coin(n, .8).astype(np.int64)
  return c


def imap(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'imap4': 1}, {'SH': .4, 'SF': .3, 'S0': .2, 'RSTO': .1})
  c['src_bytes'] = np.where(c['flag'] == 'SF', s.logn(n, 1500, 1), 0)
  c['dst_bytes'] = np.where(c['flag'] == 'SF', s.logn(n, 500, 1), 0)
  c['count'] = s.uni(n, 1, 5)
  return c


def _root_kit(s: Sampler, n: int, services: dict[str, float], root: float,
              files: float) -> Columns:
  c = _session(s, n, services, udp_share=1.0)
  c['duration'] = np.where(s.coin(n, .15), s.uni(n, 0, 5), s.logn(n, 100, 1.5))
  c['hot'] = s.uni(n, 0, 2)
  c['root_shell'] = s.coin(n, root).astype(np.int64)
  c['num_file_creations'] = np.where(s.coin(n, files), s.uni(n, 1, 2), 0)
  c['num_shells'] = s.coin(n, .1).astype(np.int64)
  return c


def rootkit(s: Sampler, n: int) -> Columns:
  return _root_kit(s, n, {'telnet': .6, 'ftp_data': .2, 'private': .2}, .3, .5)


def loadmodule(s: Sampler, n: int) -> Columns:
  return _root_kit(s, n, {'telnet': .7, 'ftp_data': .3}, .6, .6)


def perl(s: Sampler, n: int) -> Columns:
  c = _root_kit(s, n, {'telnet': 1}, .9, .3)
  c['num_root'] = s.uni(n, 1, 3)
  return c


def ftp_write(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'ftp': .5, 'ftp_data': .3, 'login': .2})
  c['duration'] = s.logn(n, 30, 1.5)
  c['hot'] = s.uni(n, 1, 3)
  c['num_file_creations'] = s.coin(n, .8).astype(np.int64)
  c['is_guest_login'] = s.coin(n, .6).astype(np.int64)
  return c


def multihop(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'ftp_data': .5, 'telnet': .4, 'ftp': .1})
  c['duration'] = s.logn(n, 200, 1.5)
  c['hot'] = s.uni(n, 1, 3)
  c['num_compromised'] = s.coin(n, .5).astype(np.int64)
  c['num_file_creations'] = s.coin(n, .5).astype(np.int64)
  c['root_shell'] = s.coin(n, .2).astype(np.int64)
  return c


def phf(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'http': 1})
  c['src_bytes'], c['dst_bytes'] = s.logn(n, 51, .1), s.logn(n, 8127, .1)
  c['hot'] = s.uni(n, 2, 3)
  c['num_access_files'] = s.coin(n, .7).astype(np.int64)
  c['duration'] = s.uni(n, 0, 5)
  return c


def spy(s: Sampler, n: int) -> Columns:
  c = _session(s, n, {'telnet': 1})
  c['duration'] = s.logn(n, 20000, .5)
  c['src_bytes'], c['dst_bytes'] = s.logn(n, 1500, 1), s.logn(n, 2e5, 1)
  c['num_file_creations'] = s.uni(n, 0, 2)
  return c


FAMILIES: dict[str, Callable[[Sampler, int], Columns]] = {
    'normal': normal, 'smurf': smurf, 'neptune': neptune, 'back': back, 'satan': satan,
    'ipsweep': ipsweep, 'portsweep': portsweep, 'warezclient': warezclient,
    'teardrop': teardrop, 'pod': pod, 'nmap': nmap, 'guess_passwd': guess_passwd,
    'buffer_overflow': buffer_overflow, 'land': land, 'warezmaster': warezmaster, 'imap': imap,
    'rootkit': rootkit, 'loadmodule': loadmodule, 'ftp_write': ftp_write, 'multihop': multihop,
    'phf': phf, 'perl': perl, 'spy': spy,
}
CATEGORY = {
    'normal': 'normal', 'smurf': 'dos', 'neptune': 'dos', 'back': 'dos', 'teardrop': 'dos',
    'pod': 'dos', 'land': 'dos', 'satan': 'probe', 'ipsweep': 'probe', 'portsweep': 'probe',
    'nmap': 'probe', 'warezclient': 'r2l', 'guess_passwd': 'r2l', 'warezmaster': 'r2l',
    'imap': 'r2l', 'ftp_write': 'r2l', 'multihop': 'r2l', 'phf': 'r2l', 'spy': 'r2l',
    'buffer_overflow': 'u2r', 'rootkit': 'u2r', 'loadmodule': 'u2r', 'perl': 'u2r',
}
# Share of each category whose traffic-window features are replaced by those of normal
# traffic: slow floods, stealthy scans. R2L / U2R already have normal windows.
CAMOUFLAGE = {'dos': .03, 'probe': .08}
