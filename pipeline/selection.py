"""What a job reads, which events it sends and what it holds back, from the
command line, validated before anything runs. Shared by backfill, check and stream."""
import re
import time
from dataclasses import dataclass
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.options import UsageError, split_list, utc_day_ms
from transforms.mapping.language import Mapping, MappingError, default_mapping, load_mapping
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


def selected_types(value: Optional[str], default: tuple, mapping: Mapping) -> tuple:
    types = tuple(t.lower() for t in (split_list(value) or default))
    unsupported = [t for t in types if t not in CALL_TYPES]
    if unsupported or not types:
        raise UsageError(f'--types {value!r}: supported types are {", ".join(CALL_TYPES)} '
                         '(identify -> contacts, track -> events; page, screen and group when '
                         'the mapping sends them as events)')
    routed = call_types(mapping.routes)
    unmapped = [t for t in types if t not in routed]
    if unmapped:
        raise UsageError(f'--types: {", ".join(unmapped)} calls are sent only when the mapping '
                         'says how (a page, screen or group section, a rule or a subscription '
                         'whose trigger takes them; see docs/mapping.md)')
    return types


def mapping_from_option(path: Optional[str]) -> Mapping:
    if path is None:
        return default_mapping()
    try:
        return load_mapping(path)
    except MappingError as error:
        raise UsageError(f'--mapping: {error}') from None


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
    """--types/--events/--mapping/--ignore_integrations."""
    mapping = mapping_from_option(args.mapping)
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
