"""The reference of benchmark 1: the backfill's dry run as one plain Python loop.

Does the work of `segment-loops backfill --dry_run` with its default options
(identify calls only, coalescing on), in one process, without Beam: reads every
gzip file, parses each line (`parse_event`), keeps identify calls, maps them
(`map_event`), groups them per contact, drops repeated messageIds, merges each
contact's upserts in event-time order (`coalesce_upserts`), writes every request
as a JSON line (`LoopsRequest.to_json`) and every failure as an Avro record.

It calls the project's own pure functions, so what separates its time from the
pipeline's is Beam's overhead, not a different way of doing the work.

    .venv/bin/python bench/plain_loop.py --input 'bench-output/archive-300k/segment-logs/*/*/*' \
        --output bench-output/plain
"""
import argparse
import glob
import gzip
import os
import time
from typing import Iterable, Optional

import fastavro

from schemas import load_schema
from transforms.coalesce import arrange_contact_requests
from transforms.mapping import Mapping, default_mapping, map_event
from transforms.parse import Rejected, event_text, parse_event
from transforms.records import failure_record, json_text


def contact_requests(requests: list) -> list:
    """One contact's upserts -> the requests to send: event-time order, repeated
    messageIds dropped, merged into one when there are several."""
    return arrange_contact_requests(requests, coalesce=True).requests


def requests_by_contact(paths: Iterable[str], mapping: Mapping,
                        failures: list) -> dict:
    """Every line of the gzip files -> {contact: [LoopsRequest, ...]} of its
    identify calls; the lines that fail are appended to `failures`."""
    by_contact = {}
    for path in paths:
        with gzip.open(path, 'rb') as lines:
            for line_number, raw in enumerate(lines, start=1):
                source = f'{path}:{line_number}'
                try:
                    event = parse_event(raw, source)
                except Rejected as rejected:
                    failures.append(failure_record('parse', rejected.reason, rejected.message,
                                                   event=event_text(raw), source=source))
                    continue
                if event.type != 'identify':
                    continue
                try:
                    request = map_event(event, mapping).request
                except Rejected as rejected:
                    failures.append(failure_record('map', rejected.reason, rejected.message,
                                                   event=json_text(event.data),
                                                   source=event.source))
                    continue
                by_contact.setdefault(request.contact, []).append(request)
    return by_contact


def run(pattern: str, output: str) -> dict:
    """Processes the archive files matching `pattern` into `output`/requests.jsonl
    and `output`/failures.avro; returns counts of what it read and wrote."""
    os.makedirs(output, exist_ok=True)
    paths = sorted(path for path in glob.glob(pattern) if path.endswith('.gz'))
    failures = []
    by_contact = requests_by_contact(paths, default_mapping(), failures)
    written = 0
    with open(os.path.join(output, 'requests.jsonl'), 'w', encoding='utf-8') as out:
        for requests in by_contact.values():
            for request in contact_requests(requests):
                out.write(request.to_json())
                out.write('\n')
                written += 1
    with open(os.path.join(output, 'failures.avro'), 'wb') as out:
        fastavro.writer(out, load_schema('failure'), failures)
    return {'files': len(paths), 'requests': written, 'failures': len(failures)}


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run once, print the counts and the seconds taken."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', required=True, help='a glob of the archive files')
    parser.add_argument('--output', required=True, help='a directory to write into')
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = run(args.input, args.output)
    print(f'{counts["files"]} files -> {counts["requests"]} requests, '
          f'{counts["failures"]} failures in {time.monotonic() - started:.2f}s')


if __name__ == '__main__':
    main()
