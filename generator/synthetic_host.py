"""Synthetic host activity: atop-like process and memory samples of many machines, labelled.

Each machine has a role (web, db, dev, desktop) with its daemons, starts transient jobs now and
then (compilers, backups, scanners, encoders: benign programs that look like attacks), and is
sometimes attacked: a cryptominer, a reverse shell (whose commands are attack too), a memory
scraper or a fork bomb. Every few seconds a machine is sampled: one process record and one
memory record per process alive during the interval, the memory sample 0-3 s after the
process sample, both with the same machine, PID and CMD.

>>> process, memory = generate_host(n_machines=2, seconds=30, seed=1, start_ts=1700000000)
>>> sorted(process[0]) == sorted(PROCESS.names)
True
>>> p = process[0]; p['NICE'] == p['PRI'] - 120
True

:func:`messy` renders a clean record the way host agents send it (strings with units).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from typing import Any, Iterator, NamedTuple, Optional

from generator import host_programs as hp
from schemas.records import FLOAT, INT, MEMORY, PROCESS, STR, RecordSchema

DEFAULT_ATTACK_FRACTION = 0.05
INTERVALS = (3, 4, 5, 6)  # seconds between two samples of one machine
MAX_MEMORY_LAG = 3  # the memory sample follows the process sample by 0..3 s
_PERSONA_WEIGHTS = {'web': .35, 'db': .2, 'dev': .25, 'desktop': .2}
_SHELL_COMMANDS = ('cat', 'ps', 'id', 'whoami', 'curl', 'wget', 'ls', 'sh')
_MEAN_ATTACK_RECORDS_PER_EPISODE = 105.0  # measured over a few hundred episodes
_ATTACKER_TOOL = dataclasses.replace(hp.TRANSIENT['shell_tool'], attack=True,
                                     kind='attacker_tool')


class HostSample(NamedTuple):
  """One sample of one machine on one stream: the records of one host message."""
  stream: str  # 'process' or 'memory'
  machine: int
  sequence: int
  ts: int
  records: list[dict[str, Any]]


@dataclasses.dataclass
class _Proc:
  pid: int
  cmd: str
  program: hp.Program
  started: float
  ends: Optional[float]
  exit: tuple[str, int]  # ('E', code) normal exit, ('S', signal) killed
  threads: int
  policy: str
  nice: int
  rtpr: int
  cpu_nr: int
  cpu_scale: float
  rsize_target: float
  rsize: float
  vsize_factor: float
  vstext: float
  reported: bool = False
  vsize: float = 0.0


@dataclasses.dataclass
class _Episode:
  kind: str
  ends: float
  cmd: str
  procs: list[_Proc]
  generation: int = 0


@dataclasses.dataclass
class _Machine:
  id: int
  persona: str
  ncpu: int
  mem: float
  interval: int
  sequence: int = 0
  last_ts: float = 0.0
  next_pid: int = 0
  procs: list[_Proc] = dataclasses.field(default_factory=list)
  episodes: list[_Episode] = dataclasses.field(default_factory=list)


def _sig3(x: float) -> float:
  """Three significant digits, as atop displays sizes (so that "1.23G" is exact)."""
  return float(f'{x:.3g}') if x else 0.0


def _weighted(rng: random.Random, pairs) -> Any:
  values, weights = zip(*pairs)
  return rng.choices(values, weights)[0]


class HostSimulator:
  """An endless, time-ordered stream of :class:`HostSample`, deterministic for a seed.

  ``attack_fraction`` is the share of records labelled attack that the simulator steers
  towards (attack episodes start at random, more often while the share is below target).
  """

  def __init__(self, n_machines: int, seed: int, start_ts: int,
               attack_fraction: float = DEFAULT_ATTACK_FRACTION):
    if n_machines < 1:
      raise ValueError('n_machines must be >= 1')
    if not 0 <= attack_fraction < 1:
      raise ValueError('attack_fraction must be in [0, 1)')
    self.rng = random.Random(seed)
    self.start_ts = int(start_ts)
    self.attack_fraction = attack_fraction
    self.records = 0
    self.attack_records = 0
    self.samples_taken = 0
    self.machines = [self._machine(i + 1) for i in range(n_machines)]

  # ---- set-up ------------------------------------------------------------------------------

  def _machine(self, machine_id: int) -> _Machine:
    rng = self.rng
    persona = _weighted(rng, _PERSONA_WEIGHTS.items())
    m = _Machine(id=machine_id, persona=persona, ncpu=rng.choice((2, 4, 8, 16, 32)),
                 mem=rng.choice((4, 8, 16, 32, 64, 128)) * hp.GB,
                 interval=rng.choice(INTERVALS), next_pid=rng.randint(300, 5000))
    m.last_ts = self.start_ts - m.interval
    for name in hp.PERSONAS[persona][0]:
      m.procs.append(self._spawn(m, hp.DAEMONS[name], started=self.start_ts - 1e5,
                                 lifetime=None, ramp=False))
    return m

  def _spawn(self, m: _Machine, program: hp.Program, started: float,
             lifetime: Optional[float], ramp: bool = True, cmd: Optional[str] = None) -> _Proc:
    rng = self.rng
    m.next_pid += rng.randint(1, 40)  # other, unsampled processes take PIDs too
    median, sigma = program.rsize
    target = median * math.exp(sigma * rng.gauss(0, 1)) if median else 0.0
    policy = _weighted(rng, program.policy)
    lo, hi = program.threads
    return _Proc(
        pid=m.next_pid, cmd=cmd or rng.choice(program.cmds), program=program, started=started,
        ends=None if lifetime is None else started + lifetime,
        exit=_weighted(rng, ((('E', 0), .8), (('E', 1), .1), (('S', 15), .05), (('S', 9), .05))),
        threads=rng.randint(lo, hi), policy=policy, nice=_weighted(rng, program.nice),
        rtpr=rng.randint(1, 99) if policy in ('fifo', 'rr') else 0,
        cpu_nr=rng.randrange(m.ncpu), cpu_scale=math.exp(0.3 * rng.gauss(0, 1)),
        rsize_target=target, rsize=target * rng.uniform(.05, .5) if ramp else target,
        vsize_factor=rng.uniform(*program.vsize_factor),
        vstext=_sig3(program.vstext * rng.uniform(.9, 1.1)) if median else 0.0,
        # A process already running when sampling starts is not new, and has its full size.
        reported=not ramp, vsize=0.0 if ramp else _sig3(target * program.vsize_factor[0]))

  # ---- what happens during an interval -----------------------------------------------------

  def _lifetime(self, spec: tuple[float, float]) -> float:
    return max(1.0, spec[0] * math.exp(spec[1] * self.rng.gauss(0, 1)))

  def _transient_jobs(self, m: _Machine, ts: float, dt: float) -> None:
    rng = self.rng
    if rng.random() >= dt / 30.0:  # about one job start every 30 s per machine
      return
    kind = _weighted(rng, hp.PERSONAS[m.persona][1].items())
    program = hp.TRANSIENT[kind]
    # make -j and shell loops start several at once: what a fork bomb looks like, benign.
    burst = rng.randint(1, m.ncpu) if kind == 'compiler' else (
        rng.randint(1, 8) if kind == 'shell_tool' else 1)
    for _ in range(burst):
      started = ts - rng.uniform(0, dt)
      m.procs.append(self._spawn(m, program, started, self._lifetime(program.lifetime)))

  def _start_probability(self, dt: float) -> float:
    f = self.attack_fraction
    if f <= 0:
      return 0.0
    # Records per machine sample, measured; then as many episode starts as give the target.
    per_sample = self.records / self.samples_taken if self.samples_taken else 15.0
    p = f / (1 - f) * per_sample / _MEAN_ATTACK_RECORDS_PER_EPISODE * dt / 4.5
    if self.records >= 2000:  # steer towards the target share once there is something to see
      realized = self.attack_records / self.records
      p *= min(4.0, max(0.25, f / max(realized, 1e-9)))
    return min(p, 1.0)

  def _attacks(self, m: _Machine, ts: float, dt: float) -> None:
    """Starts an attack episode now and then, and plays the running ones."""
    rng = self.rng
    if rng.random() < self._start_probability(dt):
      kind = _weighted(rng, ((k, w) for k, (w, _) in hp.EPISODES.items()))
      program = hp.ATTACKS[kind]
      duration = self._lifetime(hp.EPISODES[kind][1])
      started = ts - rng.uniform(0, dt)
      e = _Episode(kind, started + duration, rng.choice(program.cmds), [])
      m.episodes.append(e)
      if kind != 'fork_bomb':
        proc = self._spawn(m, program, started, duration, cmd=e.cmd)
        proc.exit = ('S', 9) if rng.random() < .7 else ('E', 0)
        if kind == 'cryptominer' and rng.random() < .25:
          proc.cpu_scale *= .2  # a throttled miner, to stay under the radar
        e.procs.append(proc)
        m.procs.append(proc)
    for e in list(m.episodes):
      if ts >= e.ends:
        for proc in e.procs:  # the admin kills what is left
          if proc.ends is None or proc.ends > e.ends:
            proc.ends, proc.exit = e.ends, ('S', 9)
        m.episodes.remove(e)
      elif e.kind == 'fork_bomb':
        e.generation += 1
        for _ in range(min(2 ** e.generation, 16)):
          started = ts - rng.uniform(0, dt)
          proc = self._spawn(m, hp.ATTACKS['fork_bomb'], started,
                             self._lifetime((8, .6)), cmd=e.cmd)
          proc.exit = ('S', 9) if rng.random() < .5 else ('E', 1)
          e.procs.append(proc)
          m.procs.append(proc)
      elif e.kind == 'reverse_shell' and rng.random() < .2:
        # The attacker types commands: short-lived tools that look exactly like an admin's.
        started = ts - rng.uniform(0, dt)
        proc = self._spawn(m, _ATTACKER_TOOL, started, self._lifetime((3, .8)),
                           cmd=rng.choice(_SHELL_COMMANDS))
        e.procs.append(proc)
        m.procs.append(proc)

  # ---- sampling ----------------------------------------------------------------------------

  def _sample(self, m: _Machine, proc: _Proc, ts: int, dt: float, common: dict):
    """One (process record, memory record) pair for ``proc`` over (ts - dt, ts]."""
    rng, program = self.rng, proc.program
    exited = proc.ends is not None and proc.ends <= ts
    begin, end = max(proc.started, ts - dt), min(proc.ends or ts, ts)
    active = max(0.0, min(1.0, (end - begin) / dt))
    median, sigma = program.cpu
    cpu = median * proc.cpu_scale * math.exp(sigma * rng.gauss(0, 1)) * active
    burst = False
    if program.kind == 'cryptominer' and rng.random() < .1:
      cpu *= .05  # pauses while the user is active
    elif program.kind == 'reverse_shell' and rng.random() < .15:
      cpu, burst = cpu + rng.uniform(10, 60), True  # the attacker runs something
    cpu = round(min(cpu, 100.0 * max(proc.threads, 1), 100.0 * m.ncpu), 2)
    if rng.random() < .3:
      proc.cpu_nr = rng.randrange(m.ncpu)

    if exited:
      state, trun, tslpi, tslpu = 'E', 0, 0, 0
    else:
      if program.kernel:
        state = 'R' if cpu > 5 else 'I'
      elif rng.random() < program.disk_wait:
        state = 'D'
      elif rng.random() < .001:
        state = 'T'
      else:
        state = 'R' if rng.random() < min(cpu / 100.0, 1.0) * .8 else 'S'
      trun = min(proc.threads, int(round(cpu / 100.0 * rng.uniform(.8, 1.2))))
      trun = max(trun, 1 if state == 'R' else 0)
      tslpu = min(proc.threads - trun, 1 if state == 'D' else 0)
      tslpi = proc.threads - trun - tslpu
    status = ('-' if proc.reported else 'N') + (proc.exit[0] if exited else '-')
    proc.reported = True

    # Memory: resident size ramps up towards its target after start, and the target grows.
    old_rsize, old_vsize = (proc.rsize, proc.vsize) if status[0] == '-' else (0.0, 0.0)
    if proc.rsize_target and not exited:
      proc.rsize_target *= math.exp(program.growth * dt * active)
      proc.rsize += (proc.rsize_target - proc.rsize) * min(1.0, dt / 10.0)
      proc.rsize = min(proc.rsize * math.exp(.01 * rng.gauss(0, 1)), .9 * m.mem)
      rsize = _sig3(proc.rsize)
      vsize = _sig3(max(rsize * proc.vsize_factor, rsize))
    else:
      rsize = vsize = 0.0
    proc.vsize = vsize
    rgrow, vgrow = (rsize - old_rsize, vsize - old_vsize) if not exited else (0.0, 0.0)
    proc.rsize = rsize or proc.rsize
    load = math.sqrt(cpu / median) if median and cpu > 0 else 0.0
    minflt = program.minflt * dt * load * math.exp(.5 * rng.gauss(0, 1)) + max(rgrow, 0) / 4096
    majflt = program.majflt * dt * active * math.exp(rng.gauss(0, 1))
    if burst:
      majflt += rng.uniform(50, 500)
    if program.majflt < 1 and rng.random() > program.majflt:
      majflt = 0.0

    attack = int(program.attack)
    process = dict(common, PID=proc.pid, TRUN=trun, TSLPI=tslpi, TSLPU=tslpu,
                   POLI=proc.policy, NICE=proc.nice, PRI=120 + proc.nice, RTPR=proc.rtpr,
                   CPUNR=proc.cpu_nr, Status=status,
                   EXC=proc.exit[1] if exited else 0, State=state, CPU=cpu, CMD=proc.cmd,
                   attack=attack)
    memory = dict(common, PID=proc.pid, MINFLT=int(round(minflt)), MAJFLT=int(round(majflt)),
                  VSTEXT=int(proc.vstext), VSIZE=vsize, RSIZE=rsize, VGROW=_sig3(vgrow),
                  RGROW=_sig3(rgrow), MEM=round(100.0 * rsize / m.mem, 2), CMD=proc.cmd,
                  attack=attack)
    return process, memory

  def _snapshot(self, m: _Machine, ts: int) -> tuple[HostSample, HostSample]:
    dt = float(ts - m.last_ts)
    self._transient_jobs(m, ts, dt)
    self._attacks(m, ts, dt)
    m.sequence += 1
    lag = self.rng.randint(0, MAX_MEMORY_LAG)
    processes, memories, alive = [], [], []
    for proc in m.procs:
      common = {'sequence': m.sequence, 'machine': m.id, 'ts': ts}
      process, memory = self._sample(m, proc, ts, dt, common)
      memory['ts'] = ts + lag
      processes.append(_ordered(PROCESS, process))
      memories.append(_ordered(MEMORY, memory))
      if process['Status'][1] == '-':
        alive.append(proc)
      self.attack_records += process['attack']
    self.records += len(processes)
    self.samples_taken += 1
    m.procs = alive
    m.last_ts = ts
    return (HostSample('process', m.id, m.sequence, ts, processes),
            HostSample('memory', m.id, m.sequence, ts + lag, memories))

  def samples(self) -> Iterator[HostSample]:
    """Samples of all machines in time order (ties by stream, then machine), forever."""
    events = []  # (ts, order, machine, sample or None)
    for m in self.machines:
      first = self.start_ts + self.rng.randrange(m.interval)
      heapq.heappush(events, (first, 0, m.id, None))
    while True:
      ts, _, machine_id, sample = heapq.heappop(events)
      if sample is not None:
        yield sample
        continue
      m = self.machines[machine_id - 1]
      process, memory = self._snapshot(m, ts)
      heapq.heappush(events, (memory.ts, 2, m.id, memory))
      heapq.heappush(events, (ts + m.interval, 0, m.id, None))
      yield process


_NAMES = {PROCESS.stream: PROCESS.names, MEMORY.stream: MEMORY.names}


def _ordered(schema: RecordSchema, record: dict[str, Any]) -> dict[str, Any]:
  return {name: record[name] for name in _NAMES[schema.stream]}


def generate_host(n_machines: int, seconds: int, seed: int, start_ts: int,
                  attack_fraction: float = DEFAULT_ATTACK_FRACTION
                  ) -> tuple[list[dict], list[dict]]:
  """Clean, typed process and memory records of ``n_machines`` over ``seconds``.

  Records have the fields of ``PROCESS`` / ``MEMORY`` in schema order, ``attack`` 0/1, ts in
  [start_ts, start_ts + seconds) for process samples (memory samples up to 3 s later), and
  come in time order.
  """
  process, memory, kept = [], [], set()
  end = start_ts + seconds
  for sample in HostSimulator(n_machines, seed, start_ts, attack_fraction).samples():
    if sample.ts >= end + MAX_MEMORY_LAG:
      break  # the memory samples of every kept process sample have come
    if sample.stream == 'process':
      if sample.ts < end:
        process.extend(sample.records)
        kept.add((sample.machine, sample.sequence))
    elif (sample.machine, sample.sequence) in kept:
      memory.extend(sample.records)
  return process, memory


# ---- messy rendering -------------------------------------------------------------------------

_UNITS = (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3))
_PERCENT = {'CPU', 'MEM'}
_NEVER_MISSING = {'attack'}
_PADDING = ('', ' ', '  ', '   ')
# Per schema: (name, is string, is integer, may be missing) of each field.
_RENDER = {schema.stream: {f.name: (f.kind == STR, f.kind == INT,
                                    not f.required and f.name not in _NEVER_MISSING)
                           for f in schema.fields} for schema in (PROCESS, MEMORY)}


def _with_unit(value: float, is_int: bool) -> Optional[str]:
  """``value`` with a K/M/G/T suffix and at most two decimals, if that is exact."""
  for unit, size in _UNITS:
    if value >= size or -value >= size:
      mantissa = round(value / size, 2)
      text = f'{mantissa:.2f}'.rstrip('0').rstrip('.')
      back = float(text) * size
      exact = round(back) == value if is_int else math.isclose(back, value, rel_tol=1e-9)
      return text + unit if exact else None
  return None


def _plain(value: float, is_int: bool) -> str:
  if is_int:
    return str(int(value))
  text = repr(float(value))  # the shortest exact form; 86100000.0 shown as "86100000"
  return text[:-2] if text.endswith('.0') else text


def _messy_number(name: str, value: float, is_int: bool, rng: random.Random) -> Any:
  r = rng.random()
  if r < .1:
    return value  # some agents send real JSON numbers
  if r < .7 and name in _PERCENT:
    text = _plain(value, False) + '%'
  else:
    text = None
    if r < .8 and (value >= 1000 or value <= -1000):
      text = _with_unit(value, is_int)
    if text is None:
      text = _plain(value, is_int)
  pad = rng.random()  # one draw decides where the stray spaces go and how many
  if pad < .24:
    return _PADDING[1 + int(pad * 12.5)] + text
  if pad < .34:
    return text + _PADDING[1 + int((pad - .24) * 20)]
  return text


def messy(record: dict[str, Any], rng: random.Random, missing: float = 0.01,
          schema: Optional[RecordSchema] = None) -> dict[str, Any]:
  """A clean host record as a host agent sends it: numbers become strings with stray spaces
  and unit suffixes, percentages get a ``%``, and now and then a non-key value is missing.

  >>> messy({'machine': 3, 'PID': 1500, 'RSIZE': 12000000.0, 'CPU': 40.0, 'CMD': 'sshd'},
  ...       random.Random(2), missing=0)   # doctest: +SKIP
  {'machine': ' 3', 'PID': '1.5K', 'RSIZE': '12M', 'CPU': '40%', 'CMD': 'sshd'}

  Parsing back (DESIGN.md): ``" 1.5K"`` is 1500, ``"12M"`` 12,000,000, ``"-3K"`` -3000,
  ``"40%"`` 40.0, ``""`` and ``"-"`` are missing. Integers get a suffix only when it is exact.
  ``attack`` (the label) stays a number; machine, PID, CMD and ts are never missing.
  """
  schema = schema or (PROCESS if 'CPU' in record else MEMORY)
  render = _RENDER[schema.stream]
  out = {}
  random_ = rng.random
  for name, value in record.items():
    spec = render.get(name)
    if spec is None or name in _NEVER_MISSING:
      out[name] = value
      continue
    is_str, is_int, may_miss = spec
    if value is None or (may_miss and random_() < missing):
      out[name] = '' if is_str or random_() < .5 else '-'
    elif is_str:
      out[name] = value + ' ' if random_() < .05 else value
    else:
      out[name] = _messy_number(name, value, is_int, rng)
  return out
