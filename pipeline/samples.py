"""Realistic Segment archives for tests, the demo and benchmarks.

`write_archive` lays files out as Segment's S3 destination does:
`<root>/segment-logs/<source-id>/<received-day>/<epoch-ms>.<hex8>.<hex8>.<uuid4>.gz`,
each a gzip file of newline-delimited JSON in receivedAt order, plus the
non-archive keys Segment leaves beside them. The content is the mess real
archives hold: every form listed in the project's segment-events reference
(messageIds that are not UUIDs, numeric and null userIds, every timestamp
form, snake_case traits, nested objects and arrays, odd keys, the three
`mailingLists` shapes...), lines that are not events, and duplicated lines.

Everything comes from `random.Random` instances seeded from `seed`, so a seed
gives the same bytes every time. Generation streams one received day at a
time: a million events need memory for one day's schedule (an int per event)
and each user's small state, not for the events.
"""
import argparse
import datetime
import functools
import gzip
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import fastavro

from transforms.avro_events import SCHEMA as AVRO_EVENT_SCHEMA
from transforms.avro_events import to_avro_record

DAY_MS = 86_400_000
ARCHIVE_PREFIX = 'segment-logs'
DUMMY_OBJECT = 'dummy-object.txt'
DAY_FOLDER_NOTE = 'README.txt'
MAX_EVENT_BYTES = 32 * 1024
GZIP_LEVEL = 1               # level 1: several times faster than 6, the size is not the point
WRITE_BATCH = 2048           # lines joined per write to the gzip stream
DUPLICATE_EVERY = 50         # every 50th valid line is written again in the next file
EVENTS_PER_USER = (10, 15)   # over all days, inclusive

_EPOCH = datetime.date(1970, 1, 1)
_COMPACT = (',', ':')

# (display name, ASCII form for email addresses)
FIRST_NAMES = (
    ('Ada', 'ada'), ('José', 'jose'), ('Zoë', 'zoe'), ('Łukasz', 'lukasz'),
    ('Mei', 'mei'), ('Olu', 'olu'), ('Priya', 'priya'), ('Sven', 'sven'),
    ('Fatima', 'fatima'), ('Noah', 'noah'), ('Ana', 'ana'), ('Kenji', 'kenji'),
)
LAST_NAMES = (
    ('Lovelace', 'lovelace'), ('García', 'garcia'), ('Müller', 'muller'),
    ('Kowalski', 'kowalski'), ('Chen', 'chen'), ('Adeyemi', 'adeyemi'),
    ('Sharma', 'sharma'), ('Olsen', 'olsen'), ('Haddad', 'haddad'),
    ("O'Brien", 'obrien'), ('Silva', 'silva'), ('Tanaka', 'tanaka'),
)
PLANS = ('free', 'pro', 'business')
CITIES = (('Berlin', 'DE'), ('São Paulo', 'BR'), ('Austin', 'US'), ('Pune', 'IN'))
PAGES = (('Home', '/'), ('Pricing', '/pricing'), ('Docs', '/docs/getting-started'),
         ('Blog', '/blog/segment-to-loops'))
CHANNELS = ('server', 'browser', 'mobile', 'client')
LIBRARIES = {
    'server': {'name': 'analytics-python', 'version': '2.3.2'},
    'browser': {'name': 'analytics.js', 'version': 'next-1.70.0'},
    'mobile': {'name': 'analytics-ios', 'version': '4.1.8'},
    'client': {'name': 'acme-custom-sender', 'version': '0.3'},
}
USER_AGENT = ('Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 '
              '(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36')
LONG_BIO = ('Runs the growth team and writes about lifecycle email. ' * 12).strip()

# The ways Segment senders spell `timestamp` besides `...sssZ`, applied in
# turn to one event in TIMESTAMP_ODD_EVERY so most events keep usable times.
TIMESTAMP_ODD_FORMS = ('+00:00', '+0530', 'no zone', 'year only', 'unpadded month',
                       'epoch ms', 'null', 'missing')
TIMESTAMP_ODD_EVERY = 5
INVALID_KINDS = ('not json', 'json array', 'json string', 'no type', 'unknown type',
                 'oversized', 'empty')


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


@dataclass(slots=True)
class _User:
    index: int
    user_id: object                 # str, or an int for the numeric-userId senders
    anonymous_id: str
    first_name: str
    last_name: str
    email: str
    channel: str
    group_id: str
    signed_up_ms: int
    plan: str = 'free'
    events: int = 0
    identifies: int = 0             # identifies that carried the userId
    tracks: int = 0
    upgraded_from: Optional[str] = None   # a plan change not yet tracked


@functools.lru_cache(maxsize=4096)
def _date_text(day_number: int) -> str:
    return (_EPOCH + datetime.timedelta(days=day_number)).isoformat()


@functools.lru_cache(maxsize=1)
def _clock_texts() -> tuple[str, ...]:
    # Every 'HH:MM:SS' of a day, built once: formatting times is the hot spot
    # of generating millions of events.
    return tuple(f'{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}'
                 for second in range(DAY_MS // 1000))


def _clock(ms: int) -> tuple[str, str, int]:
    """Epoch ms -> ('YYYY-MM-DD', 'HH:MM:SS', milliseconds), UTC."""
    day_number, rest = divmod(ms, DAY_MS)
    second, milli = divmod(rest, 1000)
    return _date_text(day_number), _clock_texts()[second], milli


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> Segment's own form, '2026-11-01T09:30:00.123Z'."""
    date, clock, milli = _clock(ms)
    return f'{date}T{clock}.{milli:03d}Z'


def _odd_timestamp(form: str, ms: int) -> object:
    if form == '+00:00':    # analytics-python: microseconds and an offset
        date, clock, milli = _clock(ms)
        return f'{date}T{clock}.{milli:03d}000+00:00'
    if form == '+0530':
        date, clock, milli = _clock(ms + 19_800_000)
        return f'{date}T{clock}.{milli:03d}+0530'
    if form == 'no zone':
        date, clock, _ = _clock(ms)
        return f'{date}T{clock}'
    if form == 'year only':
        return '2016'
    if form == 'unpadded month':
        return '2015-2-02'
    if form == 'epoch ms':
        return ms
    return None     # 'null'; 'missing' never gets here


def _day_ms(day: str) -> int:
    return (datetime.date.fromisoformat(day) - _EPOCH).days * DAY_MS


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hex8(rng: random.Random) -> str:
    return f'{rng.getrandbits(32):08x}'


class _EventFactory:
    """Builds the events of a run, one call at a time, in receivedAt order.

    `count` numbers the events of the run; the odd forms cycle on it so each
    appears at a steady rate whatever the size, while user-level forms cycle
    on the user's index.
    """

    def __init__(self, rng: random.Random, start_ms: int):
        self.rng = rng
        self.start_ms = start_ms
        self.count = 0

    def new_user(self, index: int) -> _User:
        rng = self.rng
        first, first_ascii = rng.choice(FIRST_NAMES)
        last, last_ascii = rng.choice(LAST_NAMES)
        email = f'{first_ascii}.{last_ascii}{index}@example.com'
        if index % 50 == 7:
            email = f'{first_ascii}.{last_ascii}{index}.example.com'
        user_id = 100_000 + index if index % 10 == 3 else f'usr_{index:06d}'
        return _User(index=index, user_id=user_id, anonymous_id=_uuid4(rng),
                     first_name=first, last_name=last, email=email,
                     channel=CHANNELS[index % len(CHANNELS)],
                     group_id=f'grp_{index % 7:03d}',
                     signed_up_ms=self.start_ms - rng.randrange(DAY_MS, 400 * DAY_MS))

    def event(self, user: _User, received_ms: int) -> dict:
        """The user's next event, received at `received_ms`."""
        rng = self.rng
        ordinal = user.events
        user.events += 1
        anonymous_first = user.index % 5 == 0
        if ordinal == 0 and anonymous_first:
            return self._envelope(user, received_ms, 'identify', anonymous=True,
                                  traits=self._anonymous_traits(user))
        if ordinal == 0 or ordinal % 3 == 0 or (ordinal == 1 and anonymous_first):
            kind = 'identify'
        else:
            roll = rng.random()
            kind = ('track' if roll < 0.45 else 'page' if roll < 0.75
                    else 'group' if roll < 0.85 else 'identify')
        if kind == 'identify':
            return self._envelope(user, received_ms, 'identify', traits=self._traits(user))
        if kind == 'track':
            return self._track(user, received_ms)
        if kind == 'page':
            name, path = rng.choice(PAGES)
            return self._envelope(
                user, received_ms, 'page', name=name,
                category=None if rng.random() < 0.5 else 'Marketing',
                properties={'path': path, 'url': f'https://acme.example{path}',
                            'title': f'{name} | Acme', 'referrer': 'https://www.google.com/',
                            'search': '' if rng.random() < 0.7 else '?utm_source=loops'})
        return self._envelope(
            user, received_ms, 'group', groupId=user.group_id,
            traits={'name': f'Acme Customer {user.group_id}', 'industry': 'Software',
                    'employees': rng.randrange(2, 5000), 'plan': user.plan,
                    'website url': f'https://{user.group_id}.example.com'})

    def _anonymous_traits(self, user: _User) -> dict:
        # A newsletter form filled in before sign-up: an email, no userId yet.
        return {'email': user.email, 'newsletter': True,
                'mailingLists': {'list_news': True}}

    def _names(self, user: _User) -> dict:
        style = user.index % 6
        if style == 2:
            return {'first_name': user.first_name, 'last_name': user.last_name}
        names = {'firstName': user.first_name, 'lastName': user.last_name}
        if style == 4:
            names.update(first_name=user.first_name, last_name=user.last_name)
        return names

    def _traits(self, user: _User) -> dict:
        number = user.identifies
        user.identifies += 1
        if number == 0:
            return self._profile(user)
        traits: dict = {'logins': number + 1}
        if self.rng.random() < 0.5:
            traits['email'] = user.email
        if (number == 1 and user.index % 2 == 0) or (number == 3 and user.index % 4 == 0):
            self._upgrade(user, traits)
        if number == 2 and user.index % 3 == 0:
            # A double-barrelled name after a marriage: always a change.
            user.last_name = f'{user.last_name}-{LAST_NAMES[user.index % len(LAST_NAMES)][0]}'
            traits.update(self._names(user))
            traits['name'] = f'{user.first_name} {user.last_name}'
        if number == 3:
            traits['phone'] = None
        if number == 1 and user.index % 4 == 1:
            traits['mailingLists'] = {'list_product': 'false'}
        return traits

    def _upgrade(self, user: _User, traits: dict) -> None:
        position = PLANS.index(user.plan)
        if position + 1 < len(PLANS):
            user.upgraded_from = user.plan
            user.plan = PLANS[position + 1]
            traits['plan'] = user.plan

    def _profile(self, user: _User) -> dict:
        """The first identify with a userId: the whole profile, in the user's own mess."""
        rng = self.rng
        index = user.index
        traits: dict = {'email': user.email, **self._names(user),
                        'name': f'{user.first_name} {user.last_name}',
                        'plan': user.plan, 'logins': 1,
                        'createdAt': iso_ms(user.signed_up_ms),
                        'phone': f'+49 30 {rng.randrange(1_000_000, 9_999_999)}'}
        if index % 3 != 2:
            city, country = CITIES[index % len(CITIES)]
            traits['address'] = {'street': f'{rng.randrange(1, 200)} Main St', 'city': city,
                                 'postalCode': f'{rng.randrange(10000, 99999)}',
                                 'country': country}
            traits['company'] = {'name': f'Acme {index % 7}', 'id': user.group_id,
                                 'industry': 'Software', 'employee_count': rng.randrange(2, 900)}
        if index % 2 == 0:
            traits['tags'] = ['beta', 'newsletter']
        if index % 3 == 1:
            traits['teams'] = [{'id': 'team_1', 'role': 'admin'}, {'id': 'team_2', 'role': None}]
        if index % 4 == 1:
            traits.update({'Invited User?': True, '$browser': 'Firefox',
                           'utm.source': 'newsletter', 'Lieblingsfarbe 🎨': 'grün',
                           '紹介者': 'テスト'})
        if index % 4 == 3:
            traits.update(seats='12', age='34')
        if index % 8 == 5:
            traits['bio'] = LONG_BIO
        lists = index % 4
        if lists == 0:
            traits['mailingLists'] = {'list_news': True}
        elif lists == 1:
            traits['mailingLists'] = {'list_news': 'true', 'list_product': 'false'}
        elif lists == 2:
            traits['mailingLists'] = [{'listId': 'list_news', 'subscribed': True},
                                      {'listId': 'list_product', 'subscribed': False}]
        subscribed = index % 9
        if subscribed < 3:
            traits['subscribed'] = (True, False, 'yes')[subscribed]
        return traits

    def _track(self, user: _User, received_ms: int) -> dict:
        rng = self.rng
        user.tracks += 1
        if user.tracks == 1:
            name, properties = 'Signed Up', {'plan': user.plan, 'method': 'email'}
        elif user.upgraded_from is not None:
            name = 'Plan Upgraded'
            properties = {'from': user.upgraded_from, 'to': user.plan, 'Seats?': 5}
            user.upgraded_from = None
        elif rng.random() < 0.5:
            total = rng.randrange(900, 30_000) / 100
            name = 'Order Completed'
            properties = {'orderId': f'ord_{rng.getrandbits(40):010x}', 'total': total,
                          'revenue': f'{total:.2f}', 'currency': 'USD', 'coupon': None,
                          'products': [{'product_id': 'sku_42', 'price': total,
                                        'quantity': 1, 'categories': ['plans', 'annual']}]}
        else:
            name = 'Viewed Pricing'
            properties = {'path': '/pricing', 'variant': rng.choice('AB'),
                          '$value': 0, 'Compared Plans?': ['pro', 'business']}
        if self.count % 3 == 0:
            properties['email'] = user.email
        return self._envelope(user, received_ms, 'track', event=name, properties=properties,
                              context_traits={'email': user.email})

    def _context(self, user: _User, context_traits: Optional[dict]) -> dict:
        channel = user.channel
        context: dict = {'library': dict(LIBRARIES[channel])}
        if channel == 'browser':
            context.update(ip=f'203.0.113.{user.index % 250}', userAgent=USER_AGENT,
                           locale='en-US', timezone='Europe/Berlin',
                           page={'path': '/app', 'url': 'https://acme.example/app'})
        elif channel == 'mobile':
            context.update(app={'name': 'Acme', 'version': '3.2.1', 'build': '321'},
                           device={'type': 'ios', 'model': 'iPhone15,2'},
                           os={'name': 'iOS', 'version': '17.1'},
                           locale='fr-FR', timezone='Europe/Paris')
        elif channel == 'client':
            context['ip'] = f'198.51.100.{user.index % 250}'
        if context_traits is not None:
            context['traits'] = context_traits
        return context

    def _message_id(self, count: int, received_ms: int) -> str:
        form = count % 11
        if form == 7:
            return f'ajs-next-{received_ms}-{_uuid4(self.rng)}'
        if form == 8:
            return f'personas_{self.rng.getrandbits(120):030x}'
        if form == 9:
            return f'backfill job 3 / row {count}'
        return _uuid4(self.rng)

    def _envelope(self, user: _User, received_ms: int, kind: str, *,
                  anonymous: bool = False, context_traits: Optional[dict] = None,
                  **payload) -> dict:
        """The common fields around one call's own payload."""
        rng = self.rng
        count = self.count
        self.count += 1
        # random() rather than randrange(): this runs once per event.
        sent_ms = received_ms - 20 - int(rng.random() * 2000)
        event_ms = sent_ms - int(rng.random() * 5000)
        event: dict = {'type': kind, 'messageId': self._message_id(count, received_ms),
                       'userId': None if anonymous else user.user_id}
        if anonymous or user.channel != 'server':
            event['anonymousId'] = user.anonymous_id
        event.update(payload)
        event_time = iso_ms(event_ms)
        if count % TIMESTAMP_ODD_EVERY == 2:
            form = TIMESTAMP_ODD_FORMS[count // TIMESTAMP_ODD_EVERY % len(TIMESTAMP_ODD_FORMS)]
            if form != 'missing':
                event['timestamp'] = _odd_timestamp(form, event_ms)
        else:
            event['timestamp'] = event_time
        event['originalTimestamp'] = event_time
        event['sentAt'] = iso_ms(sent_ms)
        event['receivedAt'] = iso_ms(received_ms)
        event['context'] = self._context(user, context_traits)
        if count % 6 == 0:
            event['integrations'] = {'All': True, 'Mixpanel': False,
                                     'Google Analytics': {'clientId': f'{user.index}.{count}'}}
        event['channel'] = user.channel
        event['version'] = '1.1' if count % 7 == 3 else 2
        if count % 13 == 0:
            event['projectId'] = 'proj_acme'
            event['_metadata'] = {'bundled': ['Segment.io'], 'unbundled': []}
        return event


def _received_days(users: int, days: int, seed: int,
                   start_day: str) -> Iterator[tuple[int, int, Iterator[dict]]]:
    """(day ms, number of events, the day's events in receivedAt order) per day.

    Each user gets 10 to 15 events spread over the days. A day's schedule is
    one sorted list of ints (receive offset << 32 | user index), so a day's
    order is known before any of its events is built. The days share one
    random generator: consume each day's events before taking the next day.
    """
    rng = random.Random(seed)
    start_ms = _day_ms(start_day)
    factory = _EventFactory(rng, start_ms)
    per_day = [bytearray(users) for _ in range(days)]
    for user_index in range(users):
        for _ in range(rng.randint(*EVENTS_PER_USER)):
            per_day[int(rng.random() * days)][user_index] += 1
    people = [factory.new_user(index) for index in range(users)]
    for day_number, counts in enumerate(per_day):
        day_ms = start_ms + day_number * DAY_MS
        schedule = sorted(
            int(rng.random() * DAY_MS) << 32 | user_index
            for user_index, count in enumerate(counts) for _ in range(count))
        events = (factory.event(people[key & 0xFFFFFFFF], day_ms + (key >> 32))
                  for key in schedule)
        yield day_ms, len(schedule), events


def generate_events(users: int = 20, days: int = 2, seed: int = 7,
                    start_day: str = '2026-11-01') -> Iterator[dict]:
    """Valid Segment events of `users` users over `days` received days from
    `start_day` (UTC), in receivedAt order; the same events for the same
    arguments. About 12 events per user."""
    for _, _, events in _received_days(users, days, seed, start_day):
        yield from events


# Invalid lines that need no ids of their own.
_FIXED_INVALID_LINES = {
    'not json': '{"type":"identify","userId":"usr_000001","traits":{"email":"ada@exa',
    'json string': '"identify"',
    'empty': '',
}


def _invalid_line(kind: str, rng: random.Random, day_ms: int) -> str:
    """One line of an INVALID_KINDS kind, received on the day `day_ms`."""
    if kind in _FIXED_INVALID_LINES:
        return _FIXED_INVALID_LINES[kind]
    ids = {'messageId': _uuid4(rng), 'receivedAt': iso_ms(day_ms + rng.randrange(DAY_MS))}
    if kind == 'json array':
        value: object = [{'type': 'track', 'event': 'Signed Up', **ids}]
    elif kind == 'no type':
        value = {'userId': 'usr_000002', 'traits': {'email': 'no.type@example.com'}, **ids}
    elif kind == 'unknown type':
        value = {'type': 'pageview', 'userId': 'usr_000003', **ids}
    else:
        value = {'type': 'track', 'event': 'Order Completed', 'userId': 'usr_000004', **ids,
                 'properties': {'notes': 'x' * (MAX_EVENT_BYTES + 1000)}}
    return json.dumps(value, separators=_COMPACT)


class _ArchiveWriter:
    """Writes day folders of gzip NDJSON files and keeps the manifest's counts."""

    def __init__(self, source_root: str, rng: random.Random, invalid: bool, duplicates: bool,
                 kept: Optional[list[dict]]):
        self.source_root = source_root
        self.rng = rng
        self.invalid = invalid
        self.duplicates = duplicates
        self.kept = kept
        self.files: list[str] = []
        self.lines = 0
        self.invalid_lines = 0
        self.duplicate_lines = 0
        self.valid_lines = 0
        self.carried: list[bytes] = []   # lines to repeat in the next file

    def write_day(self, day_ms: int, count: int, events: Iterator[dict], files_per_day: int,
                  last_day: bool) -> None:
        """Writes the day's `count` events into `files_per_day` files of its folder."""
        folder = os.path.join(self.source_root, str(day_ms))
        os.makedirs(folder, exist_ok=True)
        # Position p: the line goes before the day's p-th event (p == count: after the last).
        invalid_at: dict[int, list[bytes]] = {}
        if self.invalid:
            for kind in INVALID_KINDS:
                line = _invalid_line(kind, self.rng, day_ms).encode('utf-8')
                invalid_at.setdefault(self.rng.randint(0, count), []).append(line)
                self.invalid_lines += 1
        for file_number in range(files_per_day):
            last_file = file_number == files_per_day - 1
            # The last file of a day is flushed after midnight: its name's time
            # is the next day's, as real archives show.
            name_ms = (day_ms + DAY_MS + self.rng.randrange(3_600_000) if last_file
                       else day_ms + file_number * DAY_MS // files_per_day)
            name = f'{name_ms}.{_hex8(self.rng)}.{_hex8(self.rng)}.{_uuid4(self.rng)}.gz'
            path = os.path.join(folder, name)
            positions = range(count * file_number // files_per_day,
                              count * (file_number + 1) // files_per_day)
            trailing = invalid_at.get(count, []) if last_file else []
            self._write_file(path, events, positions, invalid_at, trailing,
                             can_carry=not (last_day and last_file))
            self.files.append(path)

    def _write_file(self, path: str, events: Iterator[dict], positions: range,
                    invalid_at: dict[int, list[bytes]], trailing: list[bytes],
                    can_carry: bool) -> None:
        batch, self.carried = self.carried, []
        self.duplicate_lines += len(batch)
        with open(path, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                                    compresslevel=GZIP_LEVEL, mtime=0) as out:
            for position in positions:
                batch.extend(invalid_at.get(position, ()))
                event = next(events)
                line = json.dumps(event, ensure_ascii=False, separators=_COMPACT).encode('utf-8')
                batch.append(line)
                if self.kept is not None:
                    self.kept.append(event)
                if self.duplicates and can_carry and self.valid_lines % DUPLICATE_EVERY == 0:
                    self.carried.append(line)
                self.valid_lines += 1
                if len(batch) >= WRITE_BATCH:
                    self._flush(out, batch)
            batch.extend(trailing)
            self._flush(out, batch)

    def _flush(self, out: gzip.GzipFile, batch: list[bytes]) -> None:
        if batch:
            out.write(b'\n'.join(batch) + b'\n')
            self.lines += len(batch)
            batch.clear()


def write_archive(root: str, users: int = 20, days: int = 2, seed: int = 7, *,
                  source_id: str = 'source1', files_per_day: int = 3, invalid: bool = True,
                  duplicates: bool = True, keep_events: bool = True,
                  start_day: str = '2026-11-01') -> ArchiveManifest:
    """Writes a Segment S3-layout archive under `root` and returns its manifest.

    Per received day: `files_per_day` gzip NDJSON files holding the day's
    events in receivedAt order; with `invalid`, one line of each kind in
    INVALID_KINDS at a random place; with `duplicates`, every DUPLICATE_EVERY-th
    valid line repeated verbatim at the start of the next file. Also writes
    `segment-logs/dummy-object.txt` and a README.txt in the first day folder.
    `events` in the manifest is None unless `keep_events`.
    """
    rng = random.Random(f'{seed}/archive')
    source_root = os.path.join(root, ARCHIVE_PREFIX, source_id)
    kept: Optional[list[dict]] = [] if keep_events else None
    writer = _ArchiveWriter(source_root, rng, invalid, duplicates, kept)
    day_folders = []
    for day_ms, count, events in _received_days(users, days, seed, start_day):
        writer.write_day(day_ms, count, events, files_per_day,
                         last_day=len(day_folders) == days - 1)
        day_folders.append(day_ms)
    os.makedirs(os.path.join(root, ARCHIVE_PREFIX), exist_ok=True)
    dummy = os.path.join(root, ARCHIVE_PREFIX, DUMMY_OBJECT)
    with open(dummy, 'w', encoding='utf-8') as out:
        out.write('Segment checks write access with this object.\n')
    other_files = [dummy]
    if day_folders:
        note = os.path.join(source_root, str(day_folders[0]), DAY_FOLDER_NOTE)
        with open(note, 'w', encoding='utf-8') as out:
            out.write('Not an archive file: readers must skip it.\n')
        other_files.append(note)
    return ArchiveManifest(root=root, files=writer.files, other_files=other_files,
                           lines=writer.lines, invalid_lines=writer.invalid_lines,
                           duplicate_lines=writer.duplicate_lines, events=kept,
                           days=day_folders)


def write_ndjson(path: str, events: Iterable[dict]) -> None:
    """Writes events as plain newline-delimited JSON (for .json/.jsonl/.ndjson inputs)."""
    with open(path, 'w', encoding='utf-8') as out:
        for event in events:
            out.write(json.dumps(event, ensure_ascii=False, separators=_COMPACT))
            out.write('\n')


def write_avro(path: str, events: Iterable[dict]) -> None:
    """Writes events as an Avro container file of `segment_event.avsc` records."""
    with open(path, 'wb') as out:
        fastavro.writer(out, AVRO_EVENT_SCHEMA, (to_avro_record(event) for event in events),
                        codec='deflate')


def main(argv: Optional[list[str]] = None) -> int:
    """`segment-loops generate`: the arguments after `generate` -> an archive
    written under --output and a one-line summary on stdout; returns 0."""
    parser = argparse.ArgumentParser(prog='segment-loops generate',
                                     description='Write a realistic Segment S3 archive.')
    parser.add_argument('--output', required=True, help='directory to write under')
    parser.add_argument('--users', type=int, default=20)
    parser.add_argument('--days', type=int, default=2)
    parser.add_argument('--seed', type=int, default=7)
    parser.add_argument('--files_per_day', type=int, default=3)
    parser.add_argument('--source_id', default='source1')
    parser.add_argument('--start_day', default='2026-11-01', help='first received day, UTC')
    parser.add_argument('--no_invalid', action='store_true', help='only valid event lines')
    parser.add_argument('--no_duplicates', action='store_true', help='no repeated lines')
    args = parser.parse_args(argv)
    started = time.monotonic()
    manifest = write_archive(args.output, args.users, args.days, args.seed,
                             source_id=args.source_id, files_per_day=args.files_per_day,
                             invalid=not args.no_invalid, duplicates=not args.no_duplicates,
                             keep_events=False, start_day=args.start_day)
    valid = manifest.lines - manifest.invalid_lines - manifest.duplicate_lines
    print(f'wrote {manifest.lines} lines ({valid} events, {manifest.invalid_lines} invalid, '
          f'{manifest.duplicate_lines} duplicates) in {len(manifest.files)} files over '
          f'{len(manifest.days)} days to {os.path.join(args.output, ARCHIVE_PREFIX)} '
          f'in {time.monotonic() - started:.1f}s')
    return 0
