"""segment-loops: Segment customer data into Loops, with Apache Beam.

Installs the packages (pipeline and pipeline.local, transforms and its stage
packages, schemas) with the Avro schemas as package data, so
`--setup_file ./setup.py` ships everything a Dataflow worker needs.
"""
from setuptools import find_packages, setup

setup(
    name='segment-loops',
    version='0.1.0',
    description='Backfill and stream Segment events into Loops contacts and events.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['pipeline', 'pipeline.*', 'transforms', 'transforms.*',
                                    'schemas']),
    package_data={'schemas': ['*.avsc']},
    include_package_data=True,
    install_requires=[
        'apache-beam[gcp,aws]>=2.77,<2.78',
        'requests>=2.31',
        'fastavro>=1.9',
        'PyYAML>=6.0',
        'orjson>=3.9',  # about 3x faster event parsing than the json module
        'python-liquid>=2.3,<3',  # Mapping Kit's @liquid, as Segment's subscriptions use it
    ],
    extras_require={
        'test': [
            'pytest>=8',
            'hypothesis>=6.100',
            'moto[server]>=5.0',
            'pytest-xdist>=3.5',
            # Segment's own Python SDK, as the source of a test archive (tests/test_segment_sdk.py)
            'segment-analytics-python==2.4.0',
        ],
    },
    entry_points={
        'console_scripts': ['segment-loops=pipeline.cli:main'],
    },
)
