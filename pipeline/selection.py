"""What a job reads and which events it sends, from the command line,
validated before anything runs. Shared by backfill, check and stream."""
from dataclasses import dataclass
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from pipeline.options import UsageError, split_list, utc_day_ms
from transforms.mapping import Mapping, MappingError, default_mapping, load_mapping

SUPPORTED_TYPES = ('identify', 'track')


@dataclass(frozen=True)
class ArchiveInput:
    """Archive file patterns and the received-day range to read."""
    patterns: tuple
    since_ms: Optional[int]
    until_ms: Optional[int]


@dataclass(frozen=True)
class EventSelection:
    """Which events become requests, and how they map."""
    types: tuple
    event_names: Optional[tuple]
    mapping: Mapping


def selected_types(value: Optional[str], default: tuple) -> tuple:
    types = tuple(t.lower() for t in (split_list(value) or default))
    unsupported = [t for t in types if t not in SUPPORTED_TYPES]
    if unsupported or not types:
        raise UsageError(f'--types {value!r}: supported types are {", ".join(SUPPORTED_TYPES)} '
                         '(identify -> contacts, track -> events)')
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


def event_selection_from_args(args, default_types: tuple) -> EventSelection:
    """--types/--events/--mapping."""
    return EventSelection(
        types=selected_types(args.types, default_types),
        event_names=tuple(split_list(args.events)) if args.events else None,
        mapping=mapping_from_option(args.mapping))
