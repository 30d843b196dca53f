"""Avro schemas of the records that cross process boundaries, loadable at run time."""
import json
from importlib import resources

import fastavro


def load_schema(name: str) -> dict:
    """Returns the parsed Avro schema `schemas/<name>.avsc`, e.g. load_schema('failure')."""
    text = resources.files(__name__).joinpath(f'{name}.avsc').read_text(encoding='utf-8')
    return fastavro.parse_schema(json.loads(text))
