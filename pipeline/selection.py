"""What a job reads, which events it sends and what it holds back, from the
command line, validated before anything runs. Shared by backfill, check and stream."""
import re
import time
from dataclasses import dataclass
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.options import UsageError, split_list, utc_day_ms
from transforms.mapping.language import MappingError, default_mapping, load_mapping
from transforms.mapping.processor import Policy, Selection
from transforms.mapping.routes import CALL_TYPES, call_types

IDENTITY_MODES = ('email_or_user_id', 'user_id')
_DURATION = re.compile(r'([0-9]+(?:\.[0-9]+)?)\s*([smhdw])', re.ASCII)
_SECONDS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400}


@dataclass(frozen=True)
class ArchiveInput:
    """Archive file patterns and the received-day range to read."""
    patterns: tuple
    since_ms: Optional[int]
    until_ms: Optional[int]


def parse_duration(value: str, option: str) -> Optional[float]:
    """'24h', '7d', '90m', '3600s', '2w' -> seconds; 'none' -> None."""
    text = value.strip().lower()
    if text == 'none':
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise UsageError(f'{option} {value!r}: expected a duration such as 24h, 7d, 90m, '
                         '3600s, or none')
    return float(match[1]) * _SECONDS[match[2]]


def selected_types(value: Optional[str], default: tuple, mapping) -> tuple:
    """The call types of --types, each one some route of the mapping takes;
    without --types, those of `default` the mapping routes."""
    routed = call_types(mapping.routes)
    if value is None:
        types = tuple(t for t in default if t in routed)
        if not routed:
            raise UsageError('no route of the mapping takes any call (of '
                             f'{", ".join(CALL_TYPES)}): nothing would be sent')
        if not types:
            raise UsageError(f'the mapping routes no {" or ".join(default)} calls: say which '
                             f'calls to send with --types (it routes {", ".join(sorted(routed))})')
        return types
    types = tuple(t.lower() for t in split_list(value))
    unsupported = [t for t in types if t not in CALL_TYPES]
    if unsupported or not types:
        raise UsageError(f'--types {value!r}: supported types are {", ".join(CALL_TYPES)} '
                         '(identify -> contacts, track -> events; page, screen and group when '
                         'the mapping sends them as events)')
    unmapped = [t for t in types if t not in routed]
    if unmapped:
        raise UsageError(f'--types: {", ".join(unmapped)} calls are sent only when the mapping '
                         'says how (a page, screen or group section, a rule or a subscription '
                         'whose trigger takes them; see docs/mapping.md)')
    return types


def mapping_from_option(path: Optional[str], subscriptions: Optional[str] = None):
    """The mapping of --mapping (our language's file; the default mapping
    without one) or of --segment_subscriptions (a Segment destination's
    subscriptions): two ways to write one mapping, so one or the other.
    Raises UsageError naming what is wrong and where."""
    if path is not None and subscriptions is not None:
        raise UsageError('--mapping and --segment_subscriptions are two ways to write the '
                         'mapping: give one of them')
    if subscriptions is not None:
        # Imported only here: Mapping Kit and its Liquid library take a tenth
        # of a second to import, which runs without subscriptions need not pay.
        from transforms.mapping.segment_routes import load_segment_mapping
        from transforms.mapping.subscriptions import SubscriptionError
        try:
            return load_segment_mapping(subscriptions)
        except SubscriptionError as error:
            problems = '\n  '.join(error.problems)
            raise UsageError(f'--segment_subscriptions:\n  {problems}') from None
    if path is None:
        return default_mapping()
    try:
        return load_mapping(path)
    except MappingError as error:
        raise UsageError(f'--mapping: {error}') from None


def print_skipped(mapping, out) -> None:
    """Says, as a run starts, what of its mapping never applies (disabled
    subscriptions, ...), one line each."""
    if mapping.skipped:
        print('Never applied (skipped):', file=out)
        for skipped in mapping.skipped:
            print(f'  - {skipped}', file=out)


def check_inputs_match(patterns: tuple) -> None:
    """Fails fast, with the pattern in the message, when a pattern matches nothing."""
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # any file system's error: the user must see it, not a traceback
            raise UsageError(f'--input {pattern}: cannot list files: {error}') from None
        if not matched:
            raise UsageError(f'--input {pattern}: no files match')


def archive_input_from_args(args, options) -> ArchiveInput:
    """--input/--since/--until; every pattern must match a file (checked with
    the job's file system options, e.g. --s3_endpoint_url)."""
    if not args.input:
        raise UsageError('--input is required (e.g. --input "archive/segment-logs/*/*/*.gz")')
    since_ms = utc_day_ms(args.since, '--since')
    until_ms = utc_day_ms(args.until, '--until')
    FileSystems.set_options(options)
    check_inputs_match(tuple(args.input))
    return ArchiveInput(tuple(args.input), since_ms, until_ms)


def event_selection_from_args(args, default_types: tuple) -> Selection:
    """--types/--events/--mapping or --segment_subscriptions/--ignore_integrations."""
    mapping = mapping_from_option(args.mapping, args.segment_subscriptions)
    return Selection(
        types=selected_types(args.types, default_types, mapping),
        event_names=tuple(split_list(args.events)) if args.events else None,
        mapping=mapping,
        ignore_integrations=args.ignore_integrations)


def policy_from_args(args, now_ms: Optional[int] = None) -> Policy:
    """--identity/--max_event_age, against the run's start (`now_ms`), and
    --resubscribe."""
    max_age = parse_duration(args.max_event_age, '--max_event_age')
    return Policy(
        require_user_id=args.identity == 'user_id',
        max_event_age_ms=None if max_age is None else int(max_age * 1000),
        now_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        resubscribe=args.resubscribe)
