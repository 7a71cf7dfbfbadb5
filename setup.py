"""Streaming attack detection on Apache Beam.

Installable with ``pip install -e .``; the stream job passes this file to Beam as
``--setup_file`` so that remote workers (Flink TaskManagers' Python harnesses) get the same
packages.
"""

import setuptools

REQUIRED = [
    # aws: boto3 for s3:// (Beam's S3FileSystem); gcp: google-cloud-storage for gs://. Every
    # path option (--output, --input, --model_dir) goes through Beam's FileSystems.
    'apache-beam[gcp,aws]==2.77.0',
    'pandas>=2.2',
    'pyarrow>=17',
    'scikit-learn>=1.5',
    'joblib>=1.4',
    'numpy>=1.26',
    # Strict, fast JSON decoding of every message (transforms/parse.py).
    'orjson>=3.10',
    # Typed JSON decoding of the streams' messages (transforms/parse.py).
    'msgspec>=0.19',
    # One OpenMP/BLAS thread per scoring worker (transforms/inference.py).
    'threadpoolctl>=3.1',
    # Forests compiled for serving (model/serving.py): the same trees in a third less time.
    'onnxruntime>=1.20',
    'skl2onnx>=1.17',
    # The model registry (model/registry.py): models stored without pickles (skops builds
    # only trusted types) and manifests signed with Ed25519 (cryptography).
    'skops>=0.10',
    'cryptography>=42',
    # Kafka client .properties files read as Java reads them (pipelines/kafka_config.py).
    'javaproperties>=0.8',
    # Alerts and incidents published from the Python workers (transforms/kafka_publish.py).
    'confluent-kafka>=2.4',
    # Avro message values, bare or in the Confluent wire format (transforms/avro_decode.py).
    'fastavro>=1.9',
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
        # Model reports' plots (the generator and the dashboard use confluent-kafka too).
        'tools': ['matplotlib>=3.8'],
        'test': ['pytest>=8', 'pytest-timeout>=2.3', 'pytest-xdist>=3.5', 'hypothesis>=6.100',
                 'matplotlib>=3.8',
                 # Drives Debian's /usr/bin/chromium; never `playwright install` (no download).
                 'playwright>=1.45',
                 # Coverage-guided fuzzing (tests/fuzz_parse_atheris.py); wheels for x86_64.
                 'atheris>=2.3; platform_machine == "x86_64"'],
    },
)
