"""`segment-loops map`: what Segment calls become under a mapping, one call at a time.

Segment's UI has "test mapping"; this is ours. Each line of --input (a file,
or stdin) is one Segment call as JSON. Each runs, on its own, through what a
backfill does with it (the per-event path, then the contact model's merge and
consent: pipeline/plain_backfill.py), under the mapping of --mapping (our
language; the default mapping without it) or --segment_subscriptions (a
Segment destination's own). For each call it prints the routes that took it
(a section or rule of ours, a subscription of Segment's), the requests as a
dry run writes them, the failure records and why, and what was held back or
changed. Nothing is sent, and no Loops account is read.

Exit status 2 when the mapping cannot be used (as any usage error), else 0.
"""
import argparse
import collections
import sys
from typing import Iterable, Iterator, Optional

from pipeline.options import UsageError, add_safety_options, add_selection_options
from pipeline.plain_backfill import PlainBackfill
from pipeline.selection import event_selection_from_args, policy_from_args, print_skipped
from transforms.core.records import RawEvent
from transforms.mapping.processor import EventProcessor, Processed
from transforms.mapping.routes import CALL_TYPES, call_types
from transforms.segment.parse import ParsedEvent

# Counters of the path itself, not of something changed.
_PATH_COUNTERS = ('map/contact_updates', 'map/event_sends', 'map/failed', 'map/more_routes')
_HELD_BACK = {
    'held_back/resubscribes': 'subscribed: true (--resubscribe sends it)',
    'held_back/old_events': 'an event send older than --max_event_age',
}


def map_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='segment-loops map', allow_abbrev=False,
        description='What Segment calls (one JSON a line) become under a mapping: the routes '
                    'that take each, its requests as a dry run writes them, its failures and '
                    'why. Nothing is sent.')
    parser.add_argument(
        '--input', default='-', metavar='FILE',
        help='Segment calls, one JSON object a line; - (the default) reads stdin.')
    add_selection_options(parser)
    add_safety_options(parser, max_event_age='none', resubscribe=False,
                       age_against='the time map runs')
    return parser


def main(argv: Optional[list] = None, stdin=sys.stdin, out=sys.stdout) -> int:
    """Prints what each call of --input becomes; returns the exit status.
    Raises UsageError (a mapping that cannot be used, an unreadable input)."""
    args = map_parser().parse_args(argv)
    # Without --types, every call type the mapping routes.
    processor = EventProcessor(event_selection_from_args(args, CALL_TYPES),
                               policy_from_args(args))
    print_skipped(processor.selection.mapping, out)
    for number, line in _lines(args.input, stdin):
        print('\n'.join(describe(number, line, processor, args.resubscribe)), file=out)
    return 0


def describe(number: int, line: str, processor: EventProcessor, resubscribe: bool) -> list:
    """The lines that say what one call becomes."""
    counts = collections.Counter()
    processed = processor.process(RawEvent('input', number, line), counts)
    backfill = PlainBackfill(resubscribe, counts)
    for request in processed.requests:
        backfill.add(request)
    requests = list(backfill.upserts()) + [
        request for _, _, sends in backfill.event_sends() for request in sends]
    lines = [f'line {number}: {_call(processed)}']
    lines += [f'  route {route.name} [{route.trigger}]' for route in processed.routes]
    if processed.event is not None and not processed.routes and not processed.failures:
        lines.append(f'  no request: {_filtered(processed.event, processor, counts)}')
    lines += [f'  request {request.to_json()}' for request in requests]
    lines += [f"  failure {failure['stage']}/{failure['reason']}: {failure['message']}"
              for failure in processed.failures]
    lines += [f'  held back: {_HELD_BACK.get(name, name)}' for name, n in sorted(counts.items())
              if n and name.startswith('held_back/')]
    lines += [f'  counted: {name} {n}' for name, n in sorted(counts.items())
              if n and name.startswith(('map/', 'conform/'))
              and not name.startswith(_PATH_COUNTERS) and not _is_failure(name, processed)]
    return lines


def _call(processed: Processed) -> str:
    event = processed.event
    if event is None:
        return 'not a Segment call'
    what = event.type
    if event.type == 'track' and isinstance(event.data.get('event'), str):
        what += f' "{event.data["event"]}"'
    ids = [f'{name} {value}' for name, value in (('messageId', event.message_id),
                                                 ('userId', event.user_id)) if value]
    return f'{what} ({", ".join(ids)})' if ids else what


def _filtered(event: ParsedEvent, processor: EventProcessor, counts: collections.Counter) -> str:
    """Why a call that parsed took no route."""
    if counts['filter/integrations_off']:
        return 'its integrations turned Loops off (--ignore_integrations sends it)'
    if counts['filter/no_route'] or event.type not in call_types(
            processor.selection.mapping.routes):
        return f'no route of the mapping takes this {event.type} call'
    return 'not selected (--types, --events)'


def _is_failure(name: str, processed: Processed) -> bool:
    """Whether a counter counts a failure record, shown as such already."""
    return any(name == f"map/{failure['reason']}" for failure in processed.failures)


def _lines(path: str, stdin) -> Iterator[tuple]:
    """(line number, text) of each non-blank line of the input."""
    if path == '-':
        yield from _numbered(stdin)
        return
    try:
        source = open(path, encoding='utf-8')
    except OSError as error:
        raise UsageError(f'--input {path}: {error.strerror}') from None
    with source:
        yield from _numbered(source)


def _numbered(lines: Iterable[str]) -> Iterator[tuple]:
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, line
