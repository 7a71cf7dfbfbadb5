"""Streaming attack detection on Apache Beam.

Installable with ``pip install -e .``; the stream job passes this file to Beam as
``--setup_file`` so that remote workers (Flink TaskManagers' Python harnesses) get the same
packages.
"""

import setuptools

REQUIRED = [
    'apache-beam==2.77.0',
    'pandas>=2.2',
    'pyarrow>=17',
    'scikit-learn>=1.5',
    'joblib>=1.4',
    'numpy>=1.26',
]

setuptools.setup(
    name='streaming-attack-detection',
    version='0.1.0',
    description='Real-time anomaly and attack detection over Kafka with Apache Beam',
    python_requires='>=3.10',
    packages=setuptools.find_packages(include=[
        'schemas', 'schemas.*', 'pipelines', 'pipelines.*', 'transforms', 'transforms.*',
        'model', 'model.*', 'generator', 'generator.*', 'dashboard', 'dashboard.*']),
    package_data={'dashboard': ['static/*']},
    install_requires=REQUIRED,
    extras_require={
        # The generator's Kafka producer, the dashboard's consumer, model reports' plots.
        'tools': ['confluent-kafka>=2.4', 'matplotlib>=3.8'],
        'test': ['pytest>=8', 'pytest-timeout>=2.3', 'hypothesis>=6.100',
                 'confluent-kafka>=2.4', 'matplotlib>=3.8',
                 # Drives Debian's /usr/bin/chromium; never `playwright install` (no download).
                 'playwright>=1.45'],
    },
)
