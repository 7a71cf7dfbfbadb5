"""Benchmark (not a test): the stream job side by side with the PySpark Structured Streaming job
it replaces, on the same pre-filled Kafka topic, scoring with the same published model.

    python -m benchmarks.peer                           # the whole KDD 10% file, 2 runs each
    python -m benchmarks.peer --messages 100000 --runs 1
    python -m benchmarks.peer --bootstrap_servers 127.0.0.1:9092   # an existing broker
    python -m benchmarks.peer -- --max_bundle_size=5000    # extra stream-job flags

It:

1. makes the peer's environment once, under ``.cache/peer/``: a venv with pyspark from PyPI
   (``--pyspark_version``) whose other libraries (pandas, pyarrow, numpy, the model's) are the
   product venv's, so both jobs score with the same code; and the Kafka source
   (``spark-sql-kafka-0-10_2.13`` of the same version, with kafka-clients, commons-pool2 and
   spark-token-provider-kafka) fetched from Maven Central with Maven;
2. fills one topic of ``--partitions`` (4) with the first ``--messages`` records of the real KDD
   Cup 1999 file (``--kdd_file``), as the generator sends them (``pipelines.generate --source
   kdd --one_sequential_pass``: one JSON object a message, with its uuid);
3. alternates, one job at a time, ``--runs`` (2) times each: the product's stream job
   (``python -m pipelines.stream --runner=FlinkRunner --flink_master=[local]
   --parallelism=2``, its defaults, 1 s rolls, alerts to Kafka; run as benchmarks.throughput
   runs it) and the peer (``benchmarks/peer_spark_job.py``: Kafka source, ``from_json``,
   ``mapInPandas`` scoring, Parquet sink, ``availableNow``, ``local[2]``,
   ``maxOffsetsPerTrigger`` ``--max_offsets_per_trigger``), each reading the topic from its
   beginning into a fresh folder, while the archive's Parquet footers are polled every
   ``--poll_s``;
4. compares each run's archive with the first product run's, row for row by uuid: every uuid
   once, predictions equal, the largest score difference.

Reported per run: startup (process start -> first archived row), sustained records/s (slope
between 10% and 90% of the rows), overall records/s (first archived row -> all archived),
whole-file seconds (process start -> all archived), CPU seconds of the job's processes (JVMs
and Python, sampled with the memory), peak RSS (the summed per-role peaks of its process tree),
rows written and the comparison; then the means and the ratio product / peer. Prints a table,
writes ``peer.json`` and ``peer.png`` under ``--results_dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks import common, report
from benchmarks.throughput import run_job, stage_cpu_table
from generator.source import SourceConfig, generate_messages
from harness import kafka
from harness.scripts import ROOT
from schemas.kdd import read_kdd_csv

PYSPARK_VERSION = '4.2.0'
SCALA_VERSION = '2.13'
PEER_DIR = os.path.join(ROOT, '.cache', 'peer')
KDD_FILE = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'kddcup.data_10_percent.gz')
GOAL_RATIO = 2.0
# Process roles (benchmarks.common.role_of) left out of a job's peak memory: the broker, and
# processes that are a parent's pages for an instant (a fork before its exec, version probes).
_NOT_THE_JOB = ('kafka_broker', 'fork_before_exec', 'short_lived_helper')
# What the Kafka source needs beyond pyspark's own jars (its Maven dependencies that pyspark
# already ships, such as hadoop-client and lz4, are left out: two versions on one classpath).
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.benchmarks</groupId><artifactId>peer-kafka-source</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.spark</groupId><artifactId>spark-sql-kafka-0-10_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


# name-version.jar, the version from the first dash-separated part that starts with a digit and
# runs to the end (the shortest name for which it does).
_VERSIONED_JAR = re.compile(r'^(.+?)-(\d[\w.]*(?:-\d+)*)\.jar$')


class PeerUnavailable(RuntimeError):
  """The peer's environment could not be made (no network to PyPI / Maven Central, no mvn,
  no Java 17+)."""


# ---- the peer's environment -------------------------------------------------------------------


def _run(cmd: list[str], what: str, **kwargs) -> str:
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
  if proc.returncode:
    raise PeerUnavailable(f'{what} failed ({proc.returncode}): '
                          f'{(proc.stdout + proc.stderr).strip()[-2000:]}')
  return proc.stdout


def peer_python(version: str = PYSPARK_VERSION) -> str:
  """The peer venv's interpreter, made on first use: pyspark ``version`` from PyPI, and the
  product venv's site-packages after its own (a ``.pth`` file), for pandas, pyarrow and the
  model libraries the verified loader needs. Made again when either changes."""
  venv = os.path.join(PEER_DIR, f'venv-pyspark-{version}')
  python = os.path.join(venv, 'bin', 'python')
  stamp = os.path.join(venv, '.ready')
  libraries = sysconfig.get_paths()['purelib']
  ready = f'{version} {libraries}\n'
  if os.path.exists(stamp):
    with open(stamp, encoding='utf-8') as f:
      if f.read() == ready:
        return python
  common.log(f'peer: making {venv} (pyspark {version} from PyPI; about 1-2 minutes)')
  shutil.rmtree(venv, ignore_errors=True)
  base = getattr(sys, '_base_executable', sys.executable)
  _run([base, '-m', 'venv', venv], 'python -m venv')
  _run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
        f'pyspark=={version}'], f'pip install pyspark=={version}')
  own = _run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
             'the peer venv').strip()
  with open(os.path.join(own, 'product-libraries.pth'), 'w', encoding='utf-8') as f:
    f.write(libraries + '\n')
  probe = ('import pyspark; from pyspark.sql.pandas.utils import require_minimum_pandas_version,'
           ' require_minimum_pyarrow_version; require_minimum_pandas_version();'
           ' require_minimum_pyarrow_version(); from model import registry;'
           ' print(pyspark.__version__)')
  got = _run([python, '-W', 'ignore', '-c', probe], 'the peer venv probe', cwd=ROOT).strip()
  if got != version:
    raise PeerUnavailable(f'the peer venv has pyspark {got}, not {version}')
  with open(stamp, 'w', encoding='utf-8') as f:
    f.write(ready)
  return python


def kafka_source_jars(python: str, version: str = PYSPARK_VERSION) -> list[str]:
  """The Kafka source's jars for pyspark ``version``, fetched once with Maven into
  ``.cache/peer/`` (its own local repository there), less those pyspark ships."""
  folder = os.path.join(PEER_DIR, f'kafka-source-{version}')
  stamp = os.path.join(folder, '.ready')
  if not os.path.exists(stamp):
    if not shutil.which('mvn'):
      raise PeerUnavailable('mvn not found on PATH (apt-get install maven)')
    common.log(f'peer: fetching spark-sql-kafka-0-10_{SCALA_VERSION} {version} and its '
               f'dependencies with Maven into {folder}')
    shutil.rmtree(folder, ignore_errors=True)
    build = os.path.join(PEER_DIR, 'maven')
    os.makedirs(build, exist_ok=True)
    pom = os.path.join(build, f'pom-{version}.xml')
    with open(pom, 'w', encoding='utf-8') as f:
      f.write(_POM.format(scala=SCALA_VERSION, version=version))
    fetched = folder + '.tmp'
    shutil.rmtree(fetched, ignore_errors=True)
    _run(['mvn', '-B', '-q', '-f', pom, f'-Dmaven.repo.local={os.path.join(PEER_DIR, "m2")}',
          'dependency:copy-dependencies', f'-DoutputDirectory={fetched}',
          '-DincludeScope=runtime'], 'mvn dependency:copy-dependencies')
    shipped = {_artifact(name) for name in os.listdir(_pyspark_jars(python))}
    os.makedirs(folder)
    for name in sorted(os.listdir(fetched)):
      if _artifact(name) not in shipped:
        os.replace(os.path.join(fetched, name), os.path.join(folder, name))
    shutil.rmtree(fetched, ignore_errors=True)
    with open(stamp, 'w', encoding='utf-8') as f:
      f.write(' '.join(sorted(os.listdir(folder))) + '\n')
  jars = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith('.jar'))
  if not any('spark-sql-kafka' in j for j in jars):
    raise PeerUnavailable(f'no spark-sql-kafka jar in {folder}')
  return jars


def _pyspark_jars(python: str) -> str:
  out = _run([python, '-c', 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'],
             'locating pyspark')
  return os.path.join(out.strip(), 'jars')


def _artifact(jar: str) -> str:
  """``kafka-clients-3.9.2.jar`` -> ``kafka-clients`` (and ``spark-sql-kafka-0-10_2.13``)."""
  match = _VERSIONED_JAR.match(jar)
  return match.group(1) if match else jar


def java_major(version_line: str) -> int:
  """``openjdk version "17.0.15" 2025-04-15`` -> 17 (``"1.8.0_392"`` -> 8; 0 if unreadable)."""
  try:
    text = version_line.split('"')[1]
    return int(text.split('.')[1] if text.startswith('1.') else text.split('.')[0])
  except (IndexError, ValueError):
    return 0


def prepare_peer(version: str = PYSPARK_VERSION) -> tuple[str, list[str]]:
  """(python, jars) of the peer; PeerUnavailable when it cannot be made."""
  version_line = common._first_line(['java', '-version'])  # pylint: disable=protected-access
  if java_major(version_line) < 17:
    raise PeerUnavailable(f'Spark {version} needs Java 17+; java -version says '
                          f'{version_line!r}')
  python = peer_python(version)
  return python, kafka_source_jars(python, version)


# ---- the topic --------------------------------------------------------------------------------


def fill_topic(bootstrap: str, topic: str, kdd_file: str, messages: Optional[int],
               seed: int) -> dict[str, Any]:
  """The first ``messages`` records of the file (all: None), one JSON message each, event
  times ending about now."""
  t0 = time.monotonic()
  frame = read_kdd_csv(kdd_file)
  if messages is not None:
    frame = frame.head(messages)
  count = len(frame)
  config = SourceConfig(streams=('network',), source='kdd', frame=frame, one_sequential_pass=True,
                        count=count, seed=seed, event_rate=1000.0,
                        start_ms=int(time.time() * 1000) - count, topics={'network': topic})
  sent = kafka.produce_all(bootstrap, generate_messages(config))
  seconds = time.monotonic() - t0
  common.log(f'filled {topic} with {sent:,} messages of {os.path.basename(kdd_file)} in '
             f'{seconds:.1f} s')
  return {'messages': sent, 'kdd_file': kdd_file, 'seconds': round(seconds, 1)}


# ---- the runs ---------------------------------------------------------------------------------


def run_product(bootstrap: str, topics: dict[str, str], expected: int, args, work: str,
                extra: list[str]) -> dict[str, Any]:
  """The stream job, as benchmarks.throughput runs it (its network phase)."""
  result = run_job(bootstrap, None, 'network', topics, expected, args, work, extra,
                   stage_cpu_on=args.stage_cpu)
  result['output'] = os.path.join(work, 'job-out', 'archive', 'network')
  result['cpu_s'] = result['memory']['cpu_s']
  return result


def run_peer(bootstrap: str, topic: str, expected: int, args, work: str, python: str,
             jars: list[str]) -> dict[str, Any]:
  """The PySpark job in the peer venv, until it exits (availableNow) or ``--timeout_s``."""
  output = os.path.join(work, 'peer-out')
  archive_dir = os.path.join(output, 'archive', 'network')
  log_path = os.path.join(work, 'peer.log')
  cmd = [python, '-m', 'benchmarks.peer_spark_job',
         f'--bootstrap_servers={bootstrap}', f'--topic={topic}', f'--model_dir={args.model_dir}',
         f'--output={output}', f'--jars={",".join(jars)}',
         f'--max_offsets_per_trigger={args.max_offsets_per_trigger}']
  archive = common.ArchiveCounter(archive_dir)
  samples: list[tuple[float, int]] = []
  first_output = None
  status = 'timeout'
  with open(log_path, 'wb') as logf:
    started = time.monotonic()
    # pylint: disable-next=consider-using-with
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=ROOT,
                                     PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python,
                                     SPARK_LOCAL_IP='127.0.0.1',
                                     # pyspark warns about pandas 3 in every worker; the row-for-
                                     # row comparison is what says whether it scored the same.
                                     PYTHONWARNINGS='ignore::FutureWarning'),
                            start_new_session=True)
    common.log(f'peer started (pid {proc.pid}), log {log_path}')
    sampler = common.MemorySampler({'peer_python_driver': proc.pid})
    try:
      with sampler:
        while True:
          time.sleep(args.poll_s)
          t = time.monotonic() - started
          rows = archive.rows()
          samples.append((round(t, 2), rows))
          if rows and first_output is None:
            first_output = t
            common.log(f'peer: first archived rows after {t:.1f} s')
          if proc.poll() is not None:
            rows = archive.rows()
            samples.append((round(time.monotonic() - started, 2), rows))
            status = 'complete' if rows >= expected else f'exited {proc.returncode}'
            break
          if t > args.timeout_s:
            break
          if len(samples) % int(10 / args.poll_s) == 0:
            common.log(f'peer: {rows:,} / {expected:,} archived at {t:.0f} s')
    finally:
      if proc.poll() is None:
        os.killpg(proc.pid, 15)
        proc.wait(30)
  rows = samples[-1][1] if samples else 0
  done_t = next((t for t, r in samples if r >= rows), None) if rows else None
  steady = common.steady_rate(samples, rows) if rows else None
  overall = (rows / (done_t - first_output)
             if rows and done_t and first_output is not None and done_t > first_output else None)
  with open(log_path, 'rb') as f:
    lines = [l for l in f.read().decode('utf-8', 'replace').splitlines() if l.startswith('PEER ')]
  reported = json.loads(lines[-1][len('PEER '):]) if lines else {}
  if status != 'complete':
    with open(log_path, 'rb') as f:
      tail = b'\n'.join(f.read().splitlines()[-30:]).decode('utf-8', 'replace')
    common.log(f'peer run ended: {status}; last lines of {log_path}:\n{tail}')
  memory = sampler.result()
  common.log(f'peer: {rows:,} records, steady {common.fmt(steady)}/s, overall '
             f'{common.fmt(overall)}/s, first output {common.fmt(first_output, 1)} s ({status})')
  return {
      'status': status, 'exit_code': proc.returncode, 'records_expected': expected,
      'records_archived': rows, 'files': archive.files(), 'records_per_s_steady': steady,
      'records_per_s_overall': overall, 'first_output_s': first_output,
      'all_archived_s': done_t if status == 'complete' else None,
      'micro_batches': reported.get('micro_batches'), 'spark': reported.get('spark'),
      'samples': samples, 'memory': memory, 'cpu_s': memory['cpu_s'], 'log': log_path,
      'steady_cpu': common.steady_cpu(sampler, samples, started),
      'output': archive_dir,
  }


def after_first_output(run: dict[str, Any]) -> Optional[float]:
  """Records/s from the first archived rows to the last, leaving those first rows out: the
  peer's first output is a whole micro-batch, which ``overall`` counts without its time."""
  samples, first, done = run['samples'], run['first_output_s'], run['all_archived_s']
  if first is None or not done or done <= first:
    return None
  first_rows = next(r for t, r in samples if t >= first)
  return (run['records_archived'] - first_rows) / (done - first)


# ---- comparing outputs ------------------------------------------------------------------------


_COMPARED = pa.schema([('uuid', pa.string()), ('prediction', pa.int64()), ('score', pa.float64()),
                       ('model_version', pa.string())])


def read_predictions(folder: str) -> pa.Table:
  """uuid, prediction, score, model_version of every finished Parquet file under ``folder``."""
  tables = []
  for root, _dirs, files in os.walk(folder):
    for name in sorted(files):
      if name.endswith('.parquet') and not name.startswith('.'):
        tables.append(pq.read_table(os.path.join(root, name), columns=_COMPARED.names))
  if not tables:
    return _COMPARED.empty_table()
  return pa.concat_tables([t.cast(_COMPARED) for t in tables])


def compare(reference: pa.Table, other: pa.Table) -> dict[str, Any]:
  """Row for row by uuid: ``other`` against ``reference``."""
  unique_ref = pc.count_distinct(reference['uuid']).as_py()
  unique_other = pc.count_distinct(other['uuid']).as_py()
  joined = reference.join(other, 'uuid', join_type='inner', right_suffix='_other')
  equal = pc.sum(pc.equal(joined['prediction'], joined['prediction_other'])).as_py() or 0
  diff = pc.max(pc.abs(pc.subtract(joined['score'], joined['score_other']))).as_py()
  result = {
      'rows': other.num_rows, 'unique_uuids': unique_other,
      'duplicates': other.num_rows - unique_other,
      'reference_rows': reference.num_rows, 'matched_uuids': joined.num_rows,
      'only_in_reference': unique_ref - pc.count_distinct(joined['uuid']).as_py(),
      'predictions_equal': equal, 'predictions_differ': joined.num_rows - equal,
      'max_score_difference': diff,
      'alerts': pc.sum(pc.equal(other['prediction'], 1)).as_py() or 0,
      'model_versions': sorted(v for v in pc.unique(other['model_version']).to_pylist() if v),
  }
  result['same_model'] = result['model_versions'] == sorted(
      v for v in pc.unique(reference['model_version']).to_pylist() if v)
  result['identical'] = (other.num_rows == reference.num_rows == joined.num_rows ==
                         unique_other == equal) and result['same_model']
  return result


# ---- report -----------------------------------------------------------------------------------


def _mean(values: list[Optional[float]]) -> Optional[float]:
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
  metrics = ('first_output_s', 'records_per_s_steady', 'records_per_s_overall',
             'records_per_s_after_first', 'all_archived_s', 'cpu_s', 'cpu_us_per_record',
             'peak_rss_mb')
  out: dict[str, Any] = {}
  for system in ('product', 'peer'):
    mine = [r for r in runs if r['system'] == system]
    out[system] = {m: _mean([r.get(m) for r in mine]) for m in metrics}
    for m in ('records_per_s_steady', 'records_per_s_overall'):
      values = [r.get(m) for r in mine if r.get(m) is not None]
      out[system][m + '_range'] = [min(values), max(values)] if values else None
  out['ratio_product_over_peer'] = {
      m: (out['product'][m] / out['peer'][m]
          if out['product'][m] is not None and out['peer'][m] else None) for m in metrics}
  return out


def _table(result: dict[str, Any]) -> str:
  s = result['settings']
  lines = [f"machine: {common.machine_line(result['machine'])}",
           f"topic: {s['partitions']} partitions, {result['prefill']['messages']:,} messages of "
           f"{os.path.basename(s['kdd_file'])}; product: FlinkRunner [local], parallelism "
           f"{s['parallelism']}, roll {s['roll_seconds']} s, extra flags "
           f"{s['extra_job_flags'] or 'none'}; peer: PySpark {s['pyspark_version']} Structured "
           f"Streaming, local[2], availableNow, maxOffsetsPerTrigger "
           f"{s['max_offsets_per_trigger']:,}",
           '',
           f"{'run':<10} {'startup s':>9} {'sustained/s':>11} {'overall/s':>10} {'(excl.1st)':>10} "
           f"{'whole s':>8} "
           f"{'CPU s':>7} {'us/rec':>7} {'peak RSS MB':>11} {'rows':>9}  outputs vs product #1"]
  for r in result['runs']:
    c = r.get('comparison') or {}
    if r is result['runs'][0]:
      verdict = 'reference'
    elif c:
      verdict = ('identical' if c['identical'] else
                 f"DIFFER: {c['matched_uuids']:,} matched, {c['predictions_differ']:,} "
                 f"predictions differ, {c['duplicates']:,} duplicates")
    else:
      verdict = 'n/a'
    lines.append(
        f"{r['system'] + ' #' + str(r['round']):<10} {common.fmt(r['first_output_s'], 1):>9} "
        f"{common.fmt(r['records_per_s_steady']):>11} {common.fmt(r['records_per_s_overall']):>10} "
        f"{common.fmt(r['records_per_s_after_first']):>10} "
        f"{common.fmt(r['all_archived_s'], 1):>8} {common.fmt(r['cpu_s'], 1):>7} "
        f"{common.fmt(r['cpu_us_per_record']):>7} {common.fmt(r['peak_rss_mb']):>11} "
        f"{r['records_archived']:>9,}  {verdict}" + ('' if r['status'] == 'complete'
                                                     else f" ({r['status']})") +
        (f"; load {r['load_avg_at_start'][0]}" if r.get('load_avg_at_start') else ''))
  summary = result['summary']
  lines.append('')
  for name in ('product', 'peer'):
    m = summary[name]
    lines.append(
        f"{name + ' mean':<10} {common.fmt(m['first_output_s'], 1):>9} "
        f"{common.fmt(m['records_per_s_steady']):>11} {common.fmt(m['records_per_s_overall']):>10} "
        f"{common.fmt(m['records_per_s_after_first']):>10} "
        f"{common.fmt(m['all_archived_s'], 1):>8} {common.fmt(m['cpu_s'], 1):>7} "
        f"{common.fmt(m['cpu_us_per_record']):>7} {common.fmt(m['peak_rss_mb']):>11}")
  ratio = summary['ratio_product_over_peer']
  lines.append(
      f"{'ratio':<10} {common.fmt(ratio['first_output_s'], 2):>9} "
      f"{common.fmt(ratio['records_per_s_steady'], 2):>11} "
      f"{common.fmt(ratio['records_per_s_overall'], 2):>10} "
      f"{common.fmt(ratio['records_per_s_after_first'], 2):>10} "
      f"{common.fmt(ratio['all_archived_s'], 2):>8} {common.fmt(ratio['cpu_s'], 2):>7} "
      f"{common.fmt(ratio['cpu_us_per_record'], 2):>7} {common.fmt(ratio['peak_rss_mb'], 2):>11}"
      "  (product / peer; rates: higher is better, the rest: lower)")
  lines.append('')
  goal = result['goal']
  lines.append(
      f"goal (issue 19): product >= {GOAL_RATIO:g}x the peer's sustained and overall rates: "
      f"sustained {common.fmt(ratio['records_per_s_steady'], 2)}x, overall "
      f"{common.fmt(ratio['records_per_s_overall'], 2)}x: "
      + ('met' if goal['met'] else
         f"not met; the product needs {common.fmt(goal['sustained_needed_per_s'])}/s sustained "
         f"({common.fmt(goal['sustained_factor_short'], 2)}x its rate here) and "
         f"{common.fmt(goal['overall_needed_per_s'])}/s overall "
         f"({common.fmt(goal['overall_factor_short'], 2)}x)"))
  lines.append(
      f"CPU per record, product / peer: {common.fmt(ratio['cpu_us_per_record'], 2)} (what a busy "
      f"machine changes least: there the rates are each job's share of contested cores, "
      f"load {result['machine']['load_avg_at_start']} at start)")
  lines.append('CPU per record in the steady window (10% -> 90% archived), by process role; '
               'a JVM\'s JIT compiler and GC threads apart:')
  for r in result['runs']:
    lines.append(f"  {r['system'] + ' #' + str(r['round']):<10} "
                 f"{common.steady_cpu_line(r.get('steady_cpu'))}")
  for r in result['runs']:
    if r.get('stage_cpu'):
      lines.append(f"where the SDK workers spend it, product #{r['round']} (steady window, us of "
                   'CPU per archived record; pipelines/stage_cpu.py):')
      lines.append(stage_cpu_table(r['stage_cpu']))
  lines.append('startup: process start -> first archived row; overall: first archived row -> '
               'all archived; (excl.1st): the same without the first output\'s rows; whole: '
               'process start -> all archived; CPU: every process of the '
               'job (JVMs, Python), sampled every poll; peak RSS: summed per-role peaks')
  return '\n'.join(lines)


def goal_figures(summary: dict[str, Any]) -> dict[str, Any]:
  ratio = summary['ratio_product_over_peer']
  out: dict[str, Any] = {'ratio_goal': GOAL_RATIO}
  met = True
  for key, name in (('records_per_s_steady', 'sustained'), ('records_per_s_overall', 'overall')):
    peer, product = summary['peer'][key], summary['product'][key]
    out[f'{name}_needed_per_s'] = GOAL_RATIO * peer if peer else None
    out[f'{name}_factor_short'] = GOAL_RATIO * peer / product if peer and product else None
    met = met and bool(ratio[key] and ratio[key] >= GOAL_RATIO)
  out['met'] = met
  return out


def plot(result: dict[str, Any], path: str) -> None:
  plt = common.pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
  for r in result['runs']:
    samples = r['samples']
    if samples:
      left.plot([t for t, _ in samples], [n for _, n in samples],
                linestyle='-' if r['system'] == 'product' else '--',
                color='tab:blue' if r['system'] == 'product' else 'tab:orange',
                label=f"{r['system']} #{r['round']}")
  left.set_xlabel('seconds since the process started')
  left.set_ylabel('records archived')
  left.set_title('archive rows over time', fontsize=10)
  left.legend(fontsize=7)
  summary = result['summary']
  names = ['sustained', 'overall']
  keys = ['records_per_s_steady', 'records_per_s_overall']
  x = range(len(names))
  for offset, system, color in ((-0.2, 'product', 'tab:blue'), (0.2, 'peer', 'tab:orange')):
    values = [summary[system][k] or 0 for k in keys]
    bars = right.bar([i + offset for i in x], values, width=0.4, color=color,
                     label='stream job (Flink)' if system == 'product' else 'PySpark peer')
    right.bar_label(bars, labels=[f'{v:,.0f}' for v in values], fontsize=7)
  goal = [GOAL_RATIO * (summary['peer'][k] or 0) for k in keys]
  right.scatter([i - 0.2 for i in x], goal, marker='_', s=400, color='red',
                label=f'goal: {GOAL_RATIO:g}x the peer')
  right.set_xticks(list(x), names)
  right.set_ylabel('records / s (mean of the runs)')
  ratio = summary['ratio_product_over_peer']
  right.set_title(f"product / peer: {common.fmt(ratio['records_per_s_steady'], 2)} sustained, "
                  f"{common.fmt(ratio['records_per_s_overall'], 2)} overall", fontsize=10)
  right.legend(fontsize=7, loc='lower right')
  fig.suptitle(f"{result['prefill']['messages']:,} KDD records, {result['machine']['cores']} "
               f"cores, load {result['machine']['load_avg_at_start']}, "
               f"{result['machine']['when_utc']} UTC", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.peer', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--kdd_file', default=KDD_FILE,
                      help='KDD Cup 1999 CSV (default: %(default)s).')
  parser.add_argument('--messages', type=int, default=None,
                      help='Only the first N records of the file (default: all of it).')
  parser.add_argument('--runs', type=int, default=2,
                      help='Runs of each job, alternating product / peer (default: %(default)s).')
  parser.add_argument('--partitions', type=int, default=4, choices=(1, 2, 4, 8),
                      help='Partitions of the topic (default: %(default)s).')
  parser.add_argument('--parallelism', type=int, default=2,
                      help='The stream job\'s (default: %(default)s).')
  parser.add_argument('--roll_seconds', type=int, default=1,
                      help='The stream job\'s archive rolls (default: %(default)s).')
  parser.add_argument('--max_offsets_per_trigger', type=int, default=50_000,
                      help='The peer\'s micro-batch size (default: %(default)s).')
  parser.add_argument('--pyspark_version', default=PYSPARK_VERSION,
                      help='pyspark from PyPI, and the Kafka source of the same version from '
                      'Maven Central (default: %(default)s).')
  parser.add_argument('--bootstrap_servers', default=None,
                      help='Use this broker instead of starting one (scripts/kafka.sh).')
  parser.add_argument('--model_dir', default='models',
                      help='Model registry; bootstrapped when empty (default: %(default)s).')
  parser.add_argument('--results_dir', default=common.DEFAULT_RESULTS,
                      help='Where peer.json and peer.png go (default: benchmarks/results/).')
  parser.add_argument('--name', default='peer', help='Result file names (default: %(default)s).')
  parser.add_argument('--work_dir', default=None, help='Outputs and logs (default: a temp dir, '
                      'removed unless --keep).')
  parser.add_argument('--keep', action='store_true', help='Keep outputs and logs.')
  parser.add_argument('--timeout_s', type=float, default=900,
                      help='Longest run of either job (default: %(default)s).')
  parser.add_argument('--stall_s', type=float, default=60,
                      help='The stream job\'s run ends after this long without new rows.')
  parser.add_argument('--poll_s', type=float, default=0.5,
                      help='Archive polling and process sampling period (default: %(default)s).')
  parser.add_argument('--stage_cpu', action='store_true',
                      help='Also print where the product\'s SDK workers spend their CPU in the '
                      'steady window: per DoFn method, fused stage and thread '
                      '(pipelines/stage_cpu.py).')
  parser.add_argument('--seed', type=int, default=1,
                      help='Seeds the records\' uuids (default: %(default)s).')
  args, extra = parser.parse_known_args(argv)
  extra = [a for a in extra if a != '--']
  if args.runs < 1:
    parser.error('--runs must be at least 1')
  args.model_dir = os.path.abspath(args.model_dir)
  common.ensure_models(args.model_dir)
  python, jars = prepare_peer(args.pyspark_version)
  common.log(f'peer: {python}; Kafka source jars: {", ".join(os.path.basename(j) for j in jars)}')
  result: dict[str, Any] = {
      'benchmark': 'peer', 'machine': common.machine_info(),
      'settings': {'kdd_file': args.kdd_file, 'messages': args.messages, 'runs': args.runs,
                   'partitions': args.partitions, 'parallelism': args.parallelism,
                   'roll_seconds': args.roll_seconds, 'extra_job_flags': extra,
                   'max_offsets_per_trigger': args.max_offsets_per_trigger,
                   'pyspark_version': args.pyspark_version,
                   'kafka_source_jars': [os.path.basename(j) for j in jars],
                   'own_broker': not args.bootstrap_servers, 'model_dir': args.model_dir,
                   'effective_job_flags': common.effective_job_flags(
                       [f'--parallelism={args.parallelism}', *extra])},
      'runs': [],
  }
  work_root = args.work_dir or tempfile.mkdtemp(prefix='bench-peer-')
  os.makedirs(work_root, exist_ok=True)
  reference = None
  try:
    with kafka.broker_for(args.bootstrap_servers, args.partitions) as (bootstrap, _broker_pid):
      topics = kafka.fresh_topics('peer')
      kafka.make_topics(bootstrap, topics.values(), args.partitions)
      result['topics'] = topics
      result['prefill'] = fill_topic(bootstrap, topics['network'], args.kdd_file, args.messages,
                                     args.seed)
      expected = result['prefill']['messages']
      for round_ in range(1, args.runs + 1):
        for system in ('product', 'peer'):
          work = tempfile.mkdtemp(prefix=f'{system}-{round_}-', dir=work_root)
          common.log(f'run {round_}/{args.runs}: {system}')
          load = [round(x, 1) for x in os.getloadavg()]
          if system == 'product':
            run = run_product(bootstrap, topics, expected, args, work, extra)
          else:
            run = run_peer(bootstrap, topics['network'], expected, args, work, python, jars)
          run.update(system=system, round=round_, load_avg_at_start=load)
          rows = run['records_archived']
          run['cpu_us_per_record'] = run['cpu_s'] / rows * 1e6 if rows else None
          run['records_per_s_after_first'] = after_first_output(run)
          run['peak_rss_mb'] = sum(v for k, v in run['memory']['peak_rss_mb'].items()
                                   if k not in _NOT_THE_JOB)
          table = read_predictions(run['output'])
          if reference is None:
            reference = table
          run['comparison'] = compare(reference, table)
          common.log(f"{system} #{round_}: {run['comparison']['rows']:,} rows, "
                     f"{run['comparison']['alerts']:,} alerts, identical to product #1: "
                     f"{run['comparison']['identical']}")
          result['runs'].append(run)
          if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
  finally:
    if not args.keep and not args.work_dir:
      shutil.rmtree(work_root, ignore_errors=True)
  result['summary'] = summarise(result['runs'])
  result['goal'] = goal_figures(result['summary'])
  return report.publish(args.results_dir, args.name, result, plot, _table(result))


if __name__ == '__main__':
  main()
