"""The Flex Templates' metadata files, generated from the jobs' own option parsers.

Every option of `segment-loops backfill` and `segment-loops stream` becomes a
template parameter with the option's help text, so the templates can't drift
from the CLI (tests/test_packaging.py checks the files are up to date).

    python pipeline/templates/metadata.py     # rewrites the *-metadata.json files
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable

from launch import is_flag, job_options
from pipeline.backfill import backfill_parser
from pipeline.options import yes_no
from pipeline.stream import stream_parser

HERE = os.path.dirname(os.path.abspath(__file__))

# Words written in capitals in parameter labels.
ACRONYMS = {'api': 'API', 'url': 'URL', 'id': 'ID', 'csv': 'CSV', 'ttl': 'TTL'}
NUMBER_PATTERNS = {int: r'^[0-9]+$', float: r'^[0-9]+(\.[0-9]+)?$'}
FLAG_PATTERN = '^(true|false)$'


@dataclass(frozen=True)
class Template:
    """One Flex Template: the job's parser and how the console presents it."""
    parser: Callable[[], argparse.ArgumentParser]
    name: str
    description: str
    streaming: bool
    required: frozenset


TEMPLATES = {
    'backfill': Template(
        backfill_parser, 'segment-loops backfill',
        'Segment archives (gs://, s3://; gzip NDJSON or Avro) -> Loops contacts and events, '
        'under the Loops rate limit; every event it cannot deliver goes to the dead letter.',
        streaming=False, required=frozenset({'input'})),
    'stream': Template(
        stream_parser, 'segment-loops stream',
        'A Pub/Sub subscription of Segment events -> Loops contacts and events, continuously, '
        'under the Loops rate limit; failures go to a Pub/Sub topic and/or Avro files.',
        streaming=True, required=frozenset()),
}


def label_of(dest: str) -> str:
    """'loops_api_key_secret' -> 'Loops API key secret'."""
    words = [ACRONYMS.get(word, word) for word in dest.split('_')]
    return ' '.join([words[0][:1].upper() + words[0][1:]] + words[1:])


def help_text(action: argparse.Action) -> str:
    text = ' '.join(action.help.split())
    if is_flag(action):
        # A template passes it as --name=true; launch.py makes it the flag again.
        return f'{text} (true or false; default false)'
    if action.choices:
        text += f' One of: {", ".join(action.choices)}.'
    if action.default is not None and 'default' not in text.lower():
        text += f' Default: {action.default}.'
    return text


def parameter(action: argparse.Action, required: frozenset) -> dict:
    """One template parameter (name, label, helpText, isOptional, regexes)."""
    entry = {'name': action.dest, 'label': label_of(action.dest),
             'helpText': help_text(action), 'isOptional': action.dest not in required}
    if is_flag(action) or action.type is yes_no:
        entry['regexes'] = [FLAG_PATTERN]
    elif action.choices:
        entry['regexes'] = ['^(' + '|'.join(action.choices) + ')$']
    elif action.type in NUMBER_PATTERNS:
        entry['regexes'] = [NUMBER_PATTERNS[action.type]]
    return entry


def template_metadata(template: Template) -> dict:
    """The metadata file's content for one template."""
    return {
        'name': template.name,
        'description': template.description,
        'streaming': template.streaming,
        'parameters': [parameter(a, template.required) for a in job_options(template.parser())],
    }


def metadata_path(command: str) -> str:
    return os.path.join(HERE, f'{command}-metadata.json')


def metadata_text(command: str) -> str:
    return json.dumps(template_metadata(TEMPLATES[command]), indent=2, ensure_ascii=False) + '\n'


def main() -> int:
    """Rewrites every template's metadata file; prints their paths."""
    for command in TEMPLATES:
        with open(metadata_path(command), 'w', encoding='utf-8') as out:
            out.write(metadata_text(command))
        print(metadata_path(command))
    return 0


if __name__ == '__main__':
    sys.exit(main())
