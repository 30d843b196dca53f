"""Realistic Segment archives for tests, the demo and benchmarks.

`write_archive` lays files out as Segment's S3 destination does:
`<root>/segment-logs/<source-id>/<received-day>/<epoch-ms>.<hex8>.<hex8>.<uuid4>.gz`,
each a gzip file of newline-delimited JSON in receivedAt order, plus the
non-archive keys Segment leaves beside them. The content is the mess real
archives hold: every form listed in the project's segment-events reference
(messageIds that are not UUIDs, numeric and null userIds, every timestamp
form, snake_case traits, nested objects and arrays, odd keys, the three
`mailingLists` shapes...), lines that are not events, and duplicated lines.
`write_hot_user_archive` adds one userId with a huge number of events.

Everything comes from `random.Random` instances seeded from `seed`, so a seed
gives the same bytes every time. Generation streams one received day at a
time: a million events need memory for one day's schedule (an int per event)
and each user's small state, not for the events.
"""
import heapq
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import fastavro

from pipeline.local.archive import ARCHIVE_PREFIX, COMPACT, ArchiveWriter, write_other_files
from pipeline.local.clock import day_start_ms
from pipeline.local.events import EventFactory
from pipeline.local.hot_user import HotUser, calls_on_day
from pipeline.local.traits import User
from transforms.segment.avro_events import SCHEMA as AVRO_EVENT_SCHEMA
from transforms.segment.avro_events import to_avro_record
from transforms.segment.timestamps import DAY_MS

EVENTS_PER_USER = (10, 15)   # over all days, inclusive
# Files of a hot-user archive's day hold at most this many lines (more files
# on busy days, as Segment's do), which bounds the lines held for repeating.
HOT_LINES_PER_FILE = 50_000
_USER_BITS = 0xFFFFFFFF

# (day ms, number of events, the day's events in receivedAt order)
ReceivedDay = tuple[int, int, Iterator[dict]]


@dataclass
class ArchiveManifest:
    """What `write_archive` wrote: paths, line counts and the distinct valid events."""
    root: str
    files: list[str]                # the .gz archive files, in write order
    other_files: list[str]          # the non-archive keys readers must skip
    lines: int                      # every line of the .gz files, empty ones included
    invalid_lines: int              # lines that are not a valid event (empty, >32 KB...)
    duplicate_lines: int            # verbatim repeats of earlier valid lines
    events: Optional[list[dict]]    # each distinct valid event once; None unless kept
    days: list[int]                 # the received-day folder names (epoch ms)


def _schedules(users: int, days: int, seed: int, start_day: str
               ) -> Iterator[tuple[int, list[int], EventFactory, list[User]]]:
    """(day ms, schedule, factory, users) per received day.

    Each user gets 10 to 15 events spread over the days. A day's schedule is
    one sorted list of ints (receive offset << 32 | user index), so a day's
    order is known before any of its events is built. The days share one
    random generator: build each day's events before taking the next day.
    """
    rng = random.Random(seed)
    start_ms = day_start_ms(start_day)
    factory = EventFactory(rng, start_ms)
    per_day = [bytearray(users) for _ in range(days)]
    for user_index in range(users):
        for _ in range(rng.randint(*EVENTS_PER_USER)):
            per_day[int(rng.random() * days)][user_index] += 1
    people = [factory.new_user(index) for index in range(users)]
    for day_number, counts in enumerate(per_day):
        schedule = sorted(
            int(rng.random() * DAY_MS) << 32 | user_index
            for user_index, count in enumerate(counts) for _ in range(count))
        yield start_ms + day_number * DAY_MS, schedule, factory, people


def _received_days(users: int, days: int, seed: int, start_day: str) -> Iterator[ReceivedDay]:
    for day_ms, schedule, factory, people in _schedules(users, days, seed, start_day):
        events = (factory.event(people[key & _USER_BITS], day_ms + (key >> 32))
                  for key in schedule)
        yield day_ms, len(schedule), events


def _hot_user_days(hot_events: int, users: int, days: int, seed: int,
                   start_day: str) -> Iterator[ReceivedDay]:
    """The days of `_received_days` with the hot user's calls merged in, in
    receivedAt order; the ordinary users' events are the same as without them."""
    hot = HotUser(random.Random(f'{seed}/hot'), day_start_ms(start_day))
    for day_number, (day_ms, schedule, factory, people) in enumerate(
            _schedules(users, days, seed, start_day)):
        hot_count = calls_on_day(hot_events, days, day_number)
        ordinary = ((key >> 32, people[key & _USER_BITS]) for key in schedule)
        system = ((offset, None) for offset in hot.received_offsets(hot_count))
        events = (hot.event(day_ms + offset) if user is None
                  else factory.event(user, day_ms + offset)
                  for offset, user in heapq.merge(ordinary, system, key=_first))
        yield day_ms, len(schedule) + hot_count, events


def _first(pair: tuple) -> object:
    return pair[0]


def generate_events(users: int = 20, days: int = 2, seed: int = 7,
                    start_day: str = '2026-11-01') -> Iterator[dict]:
    """Valid Segment events of `users` users over `days` received days from
    `start_day` (UTC), in receivedAt order; the same events for the same
    arguments. About 12 events per user."""
    for _, _, events in _received_days(users, days, seed, start_day):
        yield from events


def write_archive(root: str, users: int = 20, days: int = 2, seed: int = 7, *,
                  source_id: str = 'source1', files_per_day: int = 3, invalid: bool = True,
                  duplicates: bool = True, keep_events: bool = True,
                  start_day: str = '2026-11-01') -> ArchiveManifest:
    """Writes a Segment S3-layout archive under `root` and returns its manifest.

    Per received day: `files_per_day` gzip NDJSON files holding the day's
    events in receivedAt order; with `invalid`, one line of each kind in
    INVALID_KINDS at a random place; with `duplicates`, every DUPLICATE_EVERY-th
    valid line repeated verbatim at the start of the next file (archive.py).
    Also writes `segment-logs/dummy-object.txt` and a README.txt in the first
    day folder. `events` in the manifest is None unless `keep_events`.
    """
    return _write_days(root, _received_days(users, days, seed, start_day), days, seed,
                       source_id=source_id, files_for=lambda _: files_per_day,
                       invalid=invalid, duplicates=duplicates,
                       kept=[] if keep_events else None)


def write_hot_user_archive(root: str, hot_events: int, users: int = 300, days: int = 30,
                           seed: int = 7, *, source_id: str = 'source1',
                           files_per_day: int = 3, invalid: bool = True,
                           duplicates: bool = True,
                           start_day: str = '2026-11-01') -> ArchiveManifest:
    """`write_archive`'s archive of `users` users, plus `hot_events` calls of
    one server-side user (hot_user.HOT_USER_ID), half identify, half track,
    spread evenly over the days. Streams to disk: memory does not grow with
    `hot_events`. A day gets `files_per_day` files, more when it would have
    over HOT_LINES_PER_FILE events per file. The manifest's `events` is None.
    """
    return _write_days(root, _hot_user_days(hot_events, users, days, seed, start_day),
                       days, seed, source_id=source_id,
                       files_for=lambda count: max(files_per_day,
                                                   math.ceil(count / HOT_LINES_PER_FILE)),
                       invalid=invalid, duplicates=duplicates, kept=None)


def _write_days(root: str, received_days: Iterator[ReceivedDay], days: int, seed: int, *,
                source_id: str, files_for: Callable[[int], int], invalid: bool,
                duplicates: bool, kept: Optional[list[dict]]) -> ArchiveManifest:
    """Writes the received days (a day of `count` events in `files_for(count)`
    files), then the non-archive keys; returns the manifest."""
    source_root = os.path.join(root, ARCHIVE_PREFIX, source_id)
    writer = ArchiveWriter(source_root, random.Random(f'{seed}/archive'), invalid,
                           duplicates, kept)
    day_folders = []
    for day_ms, count, events in received_days:
        writer.write_day(day_ms, count, events, files_for(count),
                         last_day=len(day_folders) == days - 1)
        day_folders.append(day_ms)
    other_files = write_other_files(root, source_root,
                                    day_folders[0] if day_folders else None)
    return ArchiveManifest(root=root, files=writer.files, other_files=other_files,
                           lines=writer.lines, invalid_lines=writer.invalid_lines,
                           duplicate_lines=writer.duplicate_lines, events=kept,
                           days=day_folders)


def write_ndjson(path: str, events: Iterable[dict]) -> None:
    """Writes events as plain newline-delimited JSON (for .json/.jsonl/.ndjson inputs)."""
    with open(path, 'w', encoding='utf-8') as out:
        for event in events:
            out.write(json.dumps(event, ensure_ascii=False, separators=COMPACT))
            out.write('\n')


def write_avro(path: str, events: Iterable[dict]) -> None:
    """Writes events as an Avro container file of `segment_event.avsc` records."""
    with open(path, 'wb') as out:
        fastavro.writer(out, AVRO_EVENT_SCHEMA, (to_avro_record(event) for event in events),
                        codec='deflate')
