"""Small, exactly controlled records for transform tests.

Realistic traffic comes from the generator (``generator/``); these factories make records
whose every field a test chooses, and whose class a tiny model learns perfectly, so graph
tests can predict each output row.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.records import KDD_FEATURES, NETWORK
from transforms.source import SourceMessage

BASE_TS = 1_700_000_000  # 2023-11-14T22:13:20Z


def network_record(i: int, attack: bool = False, **overrides) -> dict[str, Any]:
  """A normal http connection, or a smurf-like ICMP flood record."""
  record = {name: 0 for name in KDD_FEATURES if NETWORK.field(name).kind != 'str'}
  if attack:
    record.update(protocol_type='icmp', service='ecr_i', flag='SF', src_bytes=1032,
                  count=511, srv_count=511, same_srv_rate=1.0, dst_host_count=255,
                  dst_host_srv_count=255, dst_host_same_srv_rate=1.0, label='smurf.')
  else:
    record.update(protocol_type='tcp', service='http', flag='SF', src_bytes=200 + i % 100,
                  dst_bytes=3000 + 7 * (i % 50), logged_in=1, count=1 + i % 5,
                  srv_count=1 + i % 5, same_srv_rate=1.0, dst_host_count=9 + i % 20,
                  dst_host_srv_count=9 + i % 20, dst_host_same_srv_rate=1.0, label='normal.')
  record.update(uuid=f'net-{i:06d}', utc=f'2023-11-14T22:{13 + (i // 60) % 40:02d}:{i % 60:02d}Z',
                sequence_id=i, index=i, site='site-a')
  record.update(overrides)
  return record


def process_record(machine: int, pid: int, cmd: str, ts: int, attack: bool,
                   **overrides) -> dict[str, Any]:
  """A process snapshot; attacks burn CPU at high priority, messy strings as atop prints."""
  record = {
      'sequence': ts - BASE_TS, 'machine': str(machine), 'PID': f' {pid}', 'TRUN': '1',
      'TSLPI': ' 3', 'TSLPU': '0', 'POLI': 'norm', 'NICE': '0', 'PRI': '100' if attack else '120',
      'RTPR': '0', 'CPUNR': '1', 'Status': '-', 'EXC': '0', 'State': 'R' if attack else 'S',
      'CPU': '97%' if attack else ' 2%', 'CMD': cmd, 'ts': ts, 'attack': int(attack)}
  record.update(overrides)
  return record


def memory_record(machine: int, pid: int, cmd: str, ts: int, attack: bool,
                  **overrides) -> dict[str, Any]:
  """A memory snapshot; attacks grow fast and fault a lot."""
  record = {
      'sequence': ts - BASE_TS, 'machine': str(machine), 'PID': str(pid),
      'MINFLT': '1.5M' if attack else '120', 'MAJFLT': '3K' if attack else '0',
      'VSTEXT': '2.1M', 'VSIZE': '2G' if attack else '120M', 'RSIZE': '1.5G' if attack else '40M',
      'VGROW': '800M' if attack else '0', 'RGROW': '600M' if attack else '0',
      'MEM': '40%' if attack else ' 1%', 'CMD': cmd, 'ts': ts, 'attack': int(attack)}
  record.update(overrides)
  return record


def message(stream: str, payload: Any, offset: int = -1) -> SourceMessage:
  value = payload if isinstance(payload, bytes) else json.dumps(payload).encode('utf-8')
  return SourceMessage(stream, value, source=f'test-{stream}', partition=0, offset=offset)
