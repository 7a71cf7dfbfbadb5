"""The local test and benchmark harness: real servers on free loopback ports, each in a run
dir of its own, driven through the same scripts a developer runs by hand.

- :mod:`harness.ports`: free ports.
- :mod:`harness.scripts`: running ``scripts/*.sh`` and checking what they need (java, jars).
- :mod:`harness.kafka`: a broker (``scripts/kafka.sh``), topics, producers, consumer lag.
- :mod:`harness.flink`: a standalone session cluster (``scripts/flink_cluster.sh``).
- :mod:`harness.s3`: an S3-compatible object store (MinIO, ``scripts/s3_server.sh``).
- :mod:`harness.procs`: process trees and their CPU time and memory, read from /proc.
- :mod:`harness.traffic`: synthetic traffic sent in the background while a job runs.

Used by the integration tests (tests/integration/conftest.py and friends) and by the
benchmarks (benchmarks/); nothing here is a test.
"""
