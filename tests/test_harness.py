"""The harness's own parts that need no server: free ports, process trees read from /proc,
topic names, and the reasons it gives when the JVM side is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from harness import scripts
from harness.kafka import fresh_topics, topics_for
from harness.ports import free_port
from harness.procs import cmdline, cpu_ticks, descendants, jvm_thread_ticks, rss_mb


def test_a_free_port_can_be_bound_on_loopback():
  port = free_port()
  with socket.socket() as s:
    s.bind(('127.0.0.1', port))  # raises if something holds it


def test_descendants_cmdline_cpu_and_memory_of_a_child_and_grandchild():
  code = 'import subprocess, sys; subprocess.run([sys.executable, "-c", "import time; time.sleep(30)"])'
  child = subprocess.Popen([sys.executable, '-c', code])
  try:
    grandchild = None
    for _ in range(100):
      below = descendants(os.getpid())
      grandchild = next((p for p in below if p != child.pid and 'time.sleep(30)' in cmdline(p)),
                        None)
      if grandchild:
        break
      subprocess.run(['sleep', '0.05'], check=True)
    assert child.pid in descendants(os.getpid())
    assert grandchild in descendants(child.pid), 'a grandchild is found through its parent'
    assert rss_mb(grandchild) > 0
    assert cpu_ticks(os.getpid()) > 0
  finally:
    child.kill()
    child.wait()
  assert cmdline(child.pid) == '' and cpu_ticks(child.pid) == 0  # gone: empty, not an error


def test_a_jvms_cpu_is_split_by_kind_of_thread(tmp_path):
  source = tmp_path / 'Spin.java'
  source.write_text('public class Spin { public static void main(String[] a) {'
                    ' long end = System.nanoTime() + 3_000_000_000L, x = 0;'
                    ' while (System.nanoTime() < end) { x += x * 31 + 7; }'
                    ' System.out.println(x); } }')
  jvm = subprocess.Popen(['java', str(source)], stdout=subprocess.DEVNULL)
  try:
    subprocess.run(['sleep', '2'], check=True)
    kinds = jvm_thread_ticks(jvm.pid)
    total = cpu_ticks(jvm.pid)
  finally:
    jvm.kill()
    jvm.wait()
  assert set(kinds) == {'jit', 'gc', 'work'}
  assert kinds['jit'] > 0, 'the source launcher compiles, and the spin loop is JIT-compiled'
  assert kinds['work'] > kinds['gc']
  # Every live thread is counted once (threads that ended are in the process's total only).
  assert sum(kinds.values()) <= total + 2 and sum(kinds.values()) >= 0.5 * total
  assert jvm_thread_ticks(jvm.pid) == {'jit': 0, 'gc': 0, 'work': 0}  # gone


def test_topic_names():
  assert topics_for('x1') == {'network': 'network_x1', 'process': 'process_x1',
                              'memory': 'memory_x1'}
  first, second = fresh_topics('bench'), fresh_topics('bench')
  assert set(first) == {'network', 'process', 'memory', 'alerts'}
  assert first['network'].startswith('bench_network_') and first['network'] != second['network']


def test_missing_jars_are_named(tmp_path, monkeypatch):
  monkeypatch.setenv('JARS_DIR', str(tmp_path))
  reason = scripts.missing_kafka()
  assert reason is not None and 'kafka' in reason and 'fetch_jars.sh' in reason
