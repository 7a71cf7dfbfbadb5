"""Data generator: the stream's source for demos, tests and benchmarks.

Library (importable without Kafka):
  * :func:`schemas.kdd.read_kdd_csv` (the KDD Cup 1999 CSV format lives in schemas/kdd.py).
  * :func:`generator.synthetic_network.generate_network` – labelled KDD-like records.
  * :func:`generator.synthetic_host.generate_host` – labelled process / memory records, and
    :func:`generator.synthetic_host.messy` to render them the way host agents send them.
  * :mod:`generator.messages` – rows to Kafka messages, and :func:`~generator.messages.malform`.
  * :mod:`generator.rate`, :mod:`generator.sinks` – token bucket, Kafka and JSON-lines sinks.

The command line is ``python -m pipelines.generate``.
"""
