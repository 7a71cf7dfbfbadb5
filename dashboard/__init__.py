"""The alerts dashboard: a live, read-only web view of alerts, attacks and pipeline health.

``python -m pipelines.dashboard`` serves it. The parts:

* :mod:`dashboard.aggregate`: bounded server-side aggregation (ring buffers of the latest rows,
  per-minute counters over the last hour, windowed top-k counters). Pure Python, no I/O.
* :mod:`dashboard.sources`: background threads feeding it: a Kafka consumer on the ``alerts``
  topic, Kafka offsets of the input topics (input rate, consumer lag), scans of the Parquet
  outputs (attacks, dead letters, alerts) and the model registry.
* :mod:`dashboard.server`: a standard-library HTTP server for the page (``static/``) and its
  JSON endpoint, with a strict Content-Security-Policy.
"""
