"""The reference of benchmark 1: the backfill's dry run as one plain Python loop.

Does the work of `segment-loops backfill --dry_run` in one process, without
Beam, on the backfill's own pieces (pipeline/plain_backfill.py): the same
file selection and reading, `EventProcessor` for parse, filter and map, the
contact model for one upsert per contact (leads merged, `subscribed: true`
held back as the backfill does by default), and each contact's event sends in
order with repeats dropped. It writes every request as a JSON line
(`LoopsRequest.to_json`, as the dry run does) and every failure as an Avro
record.

Track events of any age are sent, so with `--types identify,track` it writes
the same set of lines as

    segment-loops backfill --dry_run PREFIX --types identify,track --max_event_age none

and with the default `--types identify` the same as the backfill's defaults.
What separates its time from the pipeline's is Beam's overhead, not a
different way of doing the work.

    .venv/bin/python bench/plain_loop.py --input 'bench-output/archive-300k/segment-logs/*/*/*' \
        --output bench-output/plain [--types identify,track]
"""
import argparse
import collections
import os
import time
from typing import Optional

import fastavro

from pipeline.plain_backfill import PlainBackfill, archive_paths, read_events
from pipeline.selection import mapping_from_option, selected_types
from schemas import load_schema
from transforms.mapping.processor import EventProcessor, Selection
from transforms.segment.read import Unreadable


def run(pattern: str, output: str, types: Optional[str] = None) -> dict:
    """Processes the archive files matching `pattern` into `output`/requests.jsonl
    and `output`/failures.avro; returns counts of what it read and wrote."""
    os.makedirs(output, exist_ok=True)
    mapping = mapping_from_option(None)
    processor = EventProcessor(Selection(selected_types(types, ('identify',), mapping), None,
                                         mapping))
    counts = collections.Counter()
    backfill = PlainBackfill(resubscribe=False, counts=counts)
    failures = []
    paths = archive_paths([pattern], None, None, counts)
    for raw in read_events(paths, counts):
        if type(raw) is Unreadable:
            failures.append(raw.failure)
            continue
        processed = processor.process(raw, counts)
        failures.extend(processed.failures)
        for request in processed.requests:
            backfill.add(request)
    written = 0
    with open(os.path.join(output, 'requests.jsonl'), 'w', encoding='utf-8') as out:
        for request in backfill.upserts():
            out.write(request.to_json() + '\n')
            written += 1
        for _, _, requests in backfill.event_sends():
            for request in requests:
                out.write(request.to_json() + '\n')
                written += 1
    with open(os.path.join(output, 'failures.avro'), 'wb') as out:
        fastavro.writer(out, load_schema('failure'), failures)
    return {'files': len(paths), 'requests': written, 'failures': len(failures)}


def main(argv: Optional[list] = None) -> None:
    """Parse the arguments, run once, print the counts and the seconds taken."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', required=True, help='a glob of the archive files')
    parser.add_argument('--output', required=True, help='a directory to write into')
    parser.add_argument('--types', default=None, metavar='TYPE,...',
                        help='call types to send, as the backfill\'s --types (default: identify)')
    args = parser.parse_args(argv)
    started = time.monotonic()
    counts = run(args.input, args.output, args.types)
    print(f'{counts["files"]} files -> {counts["requests"]} requests, '
          f'{counts["failures"]} failures in {time.monotonic() - started:.2f}s')


if __name__ == '__main__':
    main()
