#!/usr/bin/env bash
# Fetch the product's PINNED JVM artifacts with Maven (from Maven Central, through ~/.m2) into
# .cache/jars/:
#   .cache/jars/beam-runners-flink-1.19-job-server-2.62.0.jar      Beam Flink job server (+ KafkaIO)
#   .cache/jars/beam-runners-flink-1.19-job-server-app-2.62.0.jar  the same + our Java classes (jvm/loopback),
#                                                                 the one jar --flink_submit_uber_jar and
#                                                                 --output_executable_path ship
#   .cache/jars/beam-runners-spark-3-job-server-2.62.0.jar         Beam Spark 3 job server (Spark 3.5.0;
#                                                                 also runs scripts/spark_cluster.sh)
#   .cache/jars/beam-sdks-java-io-expansion-service-2.62.0.jar     Beam IO expansion service (KafkaIO)
#   .cache/jars/kafka/lib/*.jar                                   Kafka 3.9.2 broker (KRaft) + tools
#   .cache/jars/flink/lib/*.jar                                   Flink 1.19.3 standalone session cluster
#   .cache/jars/flink/plugins/*/                                  its Prometheus reporter and S3 file system
# Versions live in jvm/pom.xml, whose header says why (in short: the Maven Central mirror here has no
# Beam 2.77 Java artifacts and no published job-server / expansion-service shadow jars, so the Beam
# jars are shaded here from Beam Java 2.62.0 modules; that fixes Flink to 1.19).
#
# A second run is a no-op: when every output exists and nothing under jvm/ has changed (sha256 stamp), Maven
# is not even started. A fresh clone on the same machine downloads nothing and shades nothing: the
# outputs are also kept, per pom hash, in $JARS_CACHE (~/.cache/streaming-attack-detection/jars) and
# hard-linked (or copied) from there; failing that, Maven runs offline (-o) from ~/.m2 first and only
# goes online when something is missing. FORCE=1 rebuilds. MAVEN_OPTS / MVN_ARGS pass through.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JARS_DIR="${JARS_DIR:-$ROOT/.cache/jars}"
STAMP="$JARS_DIR/.fetch-stamp"
JARS_CACHE="${JARS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streaming-attack-detection/jars}"

die() { echo "fetch_jars: $*" >&2; exit 1; }

outputs=(
  "$JARS_DIR/beam-runners-flink-1.19-job-server-2.62.0.jar"
  "$JARS_DIR/beam-runners-flink-1.19-job-server-app-2.62.0.jar"
  "$JARS_DIR/beam-runners-spark-3-job-server-2.62.0.jar"
  "$JARS_DIR/beam-sdks-java-io-expansion-service-2.62.0.jar"
  "$JARS_DIR/kafka/lib/kafka_2.13-3.9.2.jar"
  "$JARS_DIR/flink/lib/flink-runtime-1.19.3.jar"
  "$JARS_DIR/flink/plugins/metrics-prometheus/loopback-prometheus-reporter.jar"
  "$JARS_DIR/flink/plugins/s3-fs-hadoop/flink-s3-fs-hadoop-1.19.3.jar"
)

pom_hash() {  # every file the Maven build reads: the poms, and the Java sources it compiles
  (cd "$ROOT" && find jvm -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

want="$(pom_hash)"
if [[ "${FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  ok=1
  for f in "${outputs[@]}"; do [[ -s "$f" ]] || ok=0; done
  if [[ $ok == 1 ]]; then
    echo "fetch_jars: up to date in $JARS_DIR (FORCE=1 to rebuild)"
    exit 0
  fi
fi

command -v java >/dev/null 2>&1 || die "java not found on PATH: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"

complete() {  # complete DIR: every output present under DIR
  local f
  for f in "${outputs[@]}"; do [[ -s "$1/${f#"$JARS_DIR"/}" ]] || return 1; done
}

link_tree() {  # link_tree SRC DST: hard links when possible (same file system), else copies
  cp -al "$1/." "$2/" 2>/dev/null || cp -a "$1/." "$2/"
}

mkdir -p "$JARS_DIR"
# Start afresh: no stale jar of another version on a classpath, and never write through a hard link
# into the shared cache.
rm -rf "$JARS_DIR/kafka" "$JARS_DIR/flink" "$JARS_DIR"/beam-*.jar
rm -f "$STAMP"

if [[ "${FORCE:-0}" != 1 ]] && complete "$JARS_CACHE/$want"; then
  link_tree "$JARS_CACHE/$want" "$JARS_DIR"
  complete "$JARS_DIR" || die "copy from $JARS_CACHE/$want failed"
  echo "$want" > "$STAMP"
  echo "fetch_jars: restored from $JARS_CACHE/$want (built earlier on this machine)"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || die "mvn not found on PATH: install Maven 3.8+ (apt-get install maven)"

m2="${HOME}/.m2/repository"
before=$(du -sk "$m2" 2>/dev/null | cut -f1 || echo 0)
t0=$(date +%s)
mvn_log="$(mktemp)"
trap 'rm -f "$mvn_log"' EXIT
# shellcheck disable=SC2086
if mvn -B -q -o -f "$ROOT/jvm/pom.xml" -Djars.dir="$JARS_DIR" ${MVN_ARGS:-} package > "$mvn_log" 2>&1; then
  echo "fetch_jars: built offline from ~/.m2 (nothing downloaded)"
else
  echo "fetch_jars: resolving from Maven Central and shading (the first time downloads ~350 MB into ~/.m2, a few minutes)..."
  # shellcheck disable=SC2086
  mvn -B -q -f "$ROOT/jvm/pom.xml" -Djars.dir="$JARS_DIR" ${MVN_ARGS:-} package \
    || die "maven failed (see output above); rerun with MVN_ARGS=-e for details"
fi
t1=$(date +%s)
after=$(du -sk "$m2" 2>/dev/null | cut -f1 || echo 0)

complete "$JARS_DIR" || die "expected outputs missing in $JARS_DIR"
echo "$want" > "$STAMP"

# Keep this build for other clones on this machine (only the current pom hash is kept).
if mkdir -p "$JARS_CACHE" 2>/dev/null; then
  tmp="$JARS_CACHE/.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  cp -al "$JARS_DIR"/beam-*.jar "$tmp/" 2>/dev/null || cp -a "$JARS_DIR"/beam-*.jar "$tmp/"
  cp -al "$JARS_DIR/kafka" "$JARS_DIR/flink" "$tmp/" 2>/dev/null || cp -a "$JARS_DIR/kafka" "$JARS_DIR/flink" "$tmp/"
  find "$JARS_CACHE" -mindepth 1 -maxdepth 1 ! -name ".tmp.$$" -exec rm -rf {} +
  mv "$tmp" "$JARS_CACHE/$want"
fi

echo "fetch_jars: done in $((t1 - t0)) s; ~/.m2 grew by $(( (after - before) / 1024 )) MB"
du -sh "$JARS_DIR"/*.jar "$JARS_DIR"/kafka "$JARS_DIR"/flink 2>/dev/null | sed 's/^/  /'
