"""One writer per sync state: a lease that a job takes before it reads the
state and keeps until it has written its last file.

Two runs on one state at once would each send what the other sends, and
two overlapping runs over different days would each fold a snapshot that
misses the other's facts. So a job holds the state's lease, one small JSON
object `<prefix>/LEASE` (readers of the state skip it, and the local
store's `LEASE.lock`: they are not `.avro`):

    {"holder": "alice@build-3", "pid": 4242, "token": "9f1c0d2e7a3b5c61",
     "command": "backfill --since 2025-01-01",
     "acquired_at": "2026-01-05T10:00:00.000Z", "renewed_at": "...",
     "expires_at": "...", "ttl_seconds": 120.0}

    with acquire(prefix, 'backfill --since 2025-01-01', options=options) as lease:
        ...            # renewed every ttl/3 by a daemon thread; stop if lease.lost
                       # released (deleted) on exit

`acquire` refuses (LeaseHeld) while another run's lease is live, takes over
a lease that expired (its holder died without releasing it), and takes over
a live one only with break_lease=True (--break_lease). Every change is a
conditional write on the version the caller read (transforms/state/
lease_stores.py): of two runs racing for a free or expired lease exactly one
wins, and a run whose lease was broken can neither renew it nor delete the
new holder's.

Clocks: expiry compares the lease's expires_at, written by its holder's
clock, with the reader's clock, so hosts' clocks must agree to within a few
seconds; the default TTL (120 s, renewed every 40 s) leaves a wide margin.
A holder that cannot renew for a whole TTL (a stalled process, a network
outage) may be taken over; it learns so at its next renewal (`lost`).

The process that renews is the one that holds the lease: with a remote
runner (Dataflow), the launcher, which must then wait for the job to end
before it releases the lease.

The job's workers, which cannot renew a lease they do not hold, check it
(`LeaseCheck`): before they write to the state, and at least every few
seconds while they deliver, they read the lease object and stop (LeaseLost)
once it is another run's. A launcher that does not wait for its job (a Flex
Template's) hands the lease over instead (`HandedOverLease`): the workers
renew it and the job's last step releases it.
"""
import datetime
import getpass
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from transforms.state.lease_stores import LeaseStore, lease_location, store_for

DEFAULT_TTL_SECONDS = 120.0
RENEWALS_PER_TTL = 3
# Rounds of read-then-conditional-write before acquire gives up: each lost
# round means another run changed the lease in between.
ACQUIRE_ATTEMPTS = 5
_FIELDS = ('holder', 'pid', 'token', 'command', 'acquired_at', 'renewed_at', 'expires_at',
           'ttl_seconds')

log = logging.getLogger('segment_loops.lease')


class LeaseError(Exception):
    """The state's lease could not be taken or kept."""


class LeaseHeld(LeaseError):
    """Another run holds the lease (`record`), or the lease file is damaged
    (`record` None): this run must not start."""

    def __init__(self, message: str, record: Optional['LeaseRecord']):
        super().__init__(message)
        self.record = record


class LeaseLost(LeaseError):
    """This run's lease was taken over or deleted: it must stop writing."""


@dataclass(frozen=True)
class LeaseRecord:
    """The content of a lease object."""
    holder: str                       # user@host
    pid: int
    token: str                        # random, one per acquire: tells two runs apart
    command: str
    acquired_at: datetime.datetime
    renewed_at: datetime.datetime
    expires_at: datetime.datetime
    ttl_seconds: float

    def is_live(self, now: datetime.datetime) -> bool:
        return now < self.expires_at

    def renewed(self, now: datetime.datetime) -> 'LeaseRecord':
        return replace(self, renewed_at=now, expires_at=now + _seconds(self.ttl_seconds))

    def describe(self) -> str:
        return f'{self.holder} (pid {self.pid}, run {self.token}) running "{self.command}"'

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        for name in ('acquired_at', 'renewed_at', 'expires_at'):
            fields[name] = _format_time(fields[name])
        return (json.dumps(fields, indent=2) + '\n').encode('utf-8')


def parse_record(data: bytes) -> LeaseRecord:
    """The record in a lease object; ValueError (saying what is wrong) if
    it is not one."""
    try:
        fields = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f'not JSON: {error}') from None
    if not isinstance(fields, dict):
        raise ValueError('not a JSON object')
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise ValueError(f'no {", ".join(missing)}')
    try:
        return LeaseRecord(
            holder=_typed(fields, 'holder', str), pid=_typed(fields, 'pid', int),
            token=_typed(fields, 'token', str), command=_typed(fields, 'command', str),
            acquired_at=_parse_time(fields['acquired_at']),
            renewed_at=_parse_time(fields['renewed_at']),
            expires_at=_parse_time(fields['expires_at']),
            ttl_seconds=float(_typed(fields, 'ttl_seconds', (int, float))))
    except (TypeError, ValueError) as error:
        raise ValueError(str(error)) from None


def _typed(fields: dict, name: str, kind):
    value = fields[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f'{name} is {value!r}')
    return value


def _format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def _parse_time(text) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f'{text!r} has no time zone')
    return moment


def _seconds(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


def _now() -> datetime.datetime:
    # To the millisecond, as written: a record reads back equal to itself.
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _this_holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):   # no passwd entry for the uid, as in some containers
        user = f'uid{os.getuid()}'
    return f'{user}@{socket.gethostname()}'


def new_record(command: str, ttl_seconds: float) -> LeaseRecord:
    now = _now()
    return LeaseRecord(holder=_this_holder(), pid=os.getpid(), token=secrets.token_hex(8),
                       command=command, acquired_at=now, renewed_at=now,
                       expires_at=now + _seconds(ttl_seconds), ttl_seconds=ttl_seconds)


def held_message(prefix: str, location: str, record: LeaseRecord) -> str:
    expires = _format_time(record.expires_at)
    return (
        f'The sync state {prefix} is in use by another run: {record.describe()}, '
        f'since {_format_time(record.acquired_at)}, last renewed '
        f'{_format_time(record.renewed_at)}, expires at {expires} unless renewed '
        f'(lease: {location}).\n'
        'Only one run at a time may use a sync state: two would send the same data to Loops. '
        'Wait for that run to end. If it died without releasing the lease, the lease expires '
        f'at {expires} and the next run takes it over; if you are sure that run is dead and '
        'cannot wait, run again with --break_lease.')


def damaged_message(prefix: str, location: str, reason: str) -> str:
    return (
        f'The sync state {prefix} has a lease file {location} that is not a valid lease '
        f'({reason}). It may belong to a run that is using this state, so this run does not '
        'start. If no other run is using this state, run again with --break_lease to replace '
        'it.')


def _takeover_note(prefix: str, location: str, old: Optional[LeaseRecord], reason: str,
                   now: datetime.datetime) -> str:
    if old is None:
        return (f'Replaced the damaged lease file {location} of the sync state {prefix} '
                f'({reason}), as --break_lease asked.')
    if not old.is_live(now):
        return (f'Took over the lease of the sync state {prefix}: the lease of '
                f'{old.describe()} expired at {_format_time(old.expires_at)} without being '
                'released (that run stopped without releasing it, or could not renew it).')
    return (f'Broke the lease of the sync state {prefix} held by {old.describe()} (last '
            f'renewed {_format_time(old.renewed_at)}, expires at '
            f'{_format_time(old.expires_at)}), as --break_lease asked: if that run is still '
            'alive, it finds its lease lost at its next renewal and stops.')


# How every LeaseLost message starts.
LOST_MARK = 'The lease of the sync state '


def _lost_message(prefix: str, location: str, current: Optional[tuple]) -> str:
    if current is None:
        return (f'{LOST_MARK}{prefix} ({location}) was deleted by someone '
                'else: this run must stop using the state.')
    try:
        holder = parse_record(current[0])
    except ValueError as error:
        return (f'{LOST_MARK}{prefix} ({location}) was replaced by a file that '
                f'is not a valid lease ({error}): this run must stop using the state.')
    return (f'{LOST_MARK}{prefix} was taken over by {holder.describe()} at '
            f'{_format_time(holder.acquired_at)}: this run must stop using the state.')


def acquire(prefix: str, holder_description: str, ttl_seconds: float = DEFAULT_TTL_SECONDS,
            break_lease: bool = False, store: Optional[LeaseStore] = None,
            options: Optional[PipelineOptions] = None,
            on_lost: Optional[Callable[['Lease'], None]] = None) -> 'Lease':
    """Takes the lease of the state at `prefix` for this run, described by
    `holder_description` (the command, shown to whoever is refused; stored
    in plain text). Raises LeaseHeld if another run's lease is live (or the
    lease file is damaged) unless `break_lease`. An expired lease is taken
    over, and so is a live one with `break_lease`: the lease's `note` says
    whose (also logged). `store`: where the lease is (default: by the
    prefix's scheme, with `options` for S3 and GCS). `on_lost`: called, from
    the renewing thread, when a renewal finds the lease lost."""
    if ttl_seconds <= 0:
        raise ValueError('a lease needs a positive ttl_seconds')
    store = store or store_for(prefix, options)
    record = new_record(holder_description, ttl_seconds)
    data = record.to_bytes()
    for _ in range(ACQUIRE_ATTEMPTS):
        version = store.create_if_absent(data)
        if version is not None:
            return Lease(prefix, store, record, version, on_lost=on_lost)
        current = store.read()
        if current is None:
            continue   # released since our create: create again
        content, version = current
        if content == data:
            # A client retry of a write that had succeeded: this is ours.
            return Lease(prefix, store, record, version, on_lost=on_lost)
        old, reason = _parse_or_reason(content)
        now = _now()
        if not break_lease:
            if old is None:
                raise LeaseHeld(damaged_message(prefix, store.location, reason), None)
            if old.is_live(now):
                raise LeaseHeld(held_message(prefix, store.location, old), old)
        new_version = store.replace_if(data, version)
        if new_version is not None:
            note = _takeover_note(prefix, store.location, old, reason, now)
            log.warning(note)
            return Lease(prefix, store, record, new_version, on_lost=on_lost, note=note)
    raise LeaseError(f'The lease of the sync state {prefix} ({store.location}) kept changing '
                     f'while this run tried to take it ({ACQUIRE_ATTEMPTS} times): another run '
                     'is starting on it. Try again.')


def _parse_or_reason(content: bytes) -> tuple:
    try:
        return parse_record(content), ''
    except ValueError as error:
        return None, str(error)


class Lease:
    """This run's lease on a state. `renew()` extends it by its TTL,
    `release()` deletes it; as a context manager it is renewed every
    ttl/RENEWALS_PER_TTL by a daemon thread and released on exit. A
    renewal that finds the lease taken over or deleted makes `lost` true
    (`lost_reason` says by whom) and calls `on_lost`; the thread never
    raises, and retries after other errors (`renew_error`)."""

    def __init__(self, prefix: str, store: LeaseStore, record: LeaseRecord, version: str,
                 on_lost: Optional[Callable[['Lease'], None]] = None, note: str = ''):
        self.prefix, self.location, self.note = prefix, store.location, note
        self.record = record
        self.lost_reason = ''
        self.renew_error: Optional[Exception] = None
        self._store, self._version, self._on_lost = store, version, on_lost
        self._released = False
        self._guard = threading.Lock()     # the renewing thread and the job's thread
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def lost(self) -> bool:
        return bool(self.lost_reason)

    def renew(self) -> None:
        """Extends the lease by its TTL from now; LeaseLost if it is no
        longer this run's."""
        with self._guard:
            if self.lost:
                raise LeaseLost(self.lost_reason)
            if self._released:
                raise LeaseError(f'the lease {self.location} was released')
            record = self.record.renewed(_now())
            data = record.to_bytes()
            version = self._store.replace_if(data, self._version)
            if version is None:
                current = self._store.read()
                if current is None or current[0] != data:
                    self.lost_reason = _lost_message(self.prefix, self.location, current)
                    raise LeaseLost(self.lost_reason)
                version = current[1]   # our own write, retried by the client
            self.record, self._version = record, version

    def release(self) -> bool:
        """Stops renewing and deletes the lease if it is still this run's;
        -> whether it deleted it (False: lost, or already released)."""
        self._stop.set()
        with self._guard:
            if self.lost or self._released:
                return False
            self._released = True
            if self._store.delete_if(self._version):
                return True
            self.lost_reason = _lost_message(self.prefix, self.location, self._store.read())
            return False

    def start_renewing(self) -> None:
        """Renews every ttl/RENEWALS_PER_TTL in a daemon thread until
        release() (a thread that dies with the process: a killed job's
        lease expires instead of being renewed)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._keep_renewed, daemon=True,
                                        name=f'lease-renewal-{self.record.token}')
        self._thread.start()

    def _keep_renewed(self) -> None:
        interval = self.record.ttl_seconds / RENEWALS_PER_TTL
        while not self._stop.wait(interval):
            try:
                self.renew()
                self.renew_error = None
            except LeaseLost:
                log.error(self.lost_reason)
                self._notify_lost()
                return
            except LeaseError:
                return   # released meanwhile
            except Exception as error:   # a store outage: the next round retries
                self.renew_error = error
                log.warning('Could not renew the lease %s (retrying in %g s): %s',
                            self.location, interval, error)

    def _notify_lost(self) -> None:
        if self._on_lost is None:
            return
        try:
            self._on_lost(self)
        except Exception:   # the thread must not die with the callback's error unseen
            log.exception('The on_lost callback of the lease %s failed', self.location)

    def __enter__(self) -> 'Lease':
        self.start_renewing()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
        if self._thread is not None:
            self._thread.join()


class LeaseCheck:
    """Whether this run still holds the lease of the state at `prefix`
    (its `token`), as the job's workers see it: `check()` reads the lease
    object through Beam's file systems and raises LeaseLost when it is gone
    or another run's; `check_if_due()` does so at most every
    `interval_seconds`. Picklable."""

    def __init__(self, prefix: str, token: str, interval_seconds: float):
        self.prefix, self.token = prefix, token
        self._interval = interval_seconds
        self._checked_at: Optional[float] = None

    def __getstate__(self):
        return {**self.__dict__, '_checked_at': None}

    def check(self) -> None:
        location = lease_location(self.prefix)
        try:
            with FileSystems.open(location) as f:
                data = f.read()
        except Exception:   # gone (every file system words it its own way)
            if FileSystems.exists(location):
                raise
            data = None
        self._checked_at = time.monotonic()
        if data is None:
            raise LeaseLost(_lost_message(self.prefix, location, None))
        record, _ = _parse_or_reason(data)
        if record is None or record.token != self.token:
            raise LeaseLost(_lost_message(self.prefix, location, (data, None)))

    def check_if_due(self) -> None:
        if self._checked_at is None or time.monotonic() - self._checked_at >= self._interval:
            self.check()


# How long a lease handed to a job lasts without a renewal (a launcher that
# does not wait, such as a Flex Template's, cannot renew it): long enough
# for the job's steps before and after its writers, which renew it.
HANDED_OVER_TTL_SECONDS = 2 * 3600.0


class HandedOverLease(LeaseCheck):
    """The lease of a job its launcher does not wait for: the launcher takes
    it for HANDED_OVER_TTL_SECONDS and hands it over. The job's workers
    renew it as they check it, once a third of its TTL has passed, through
    the lease store (transforms/state/lease_stores.py, with the job's
    `options`), and its last step releases it (`release`). Picklable."""

    def __init__(self, prefix: str, token: str, interval_seconds: float,
                 options: PipelineOptions):
        super().__init__(prefix, token, interval_seconds)
        self._options = options

    def check(self) -> None:
        store = store_for(self.prefix, self._options)
        current = store.read()
        self._checked_at = time.monotonic()
        record = None if current is None else _parse_or_reason(current[0])[0]
        if record is None or record.token != self.token:
            raise LeaseLost(_lost_message(self.prefix, store.location, current))
        now = _now()
        if record.expires_at - now < _seconds(record.ttl_seconds * 2 / RENEWALS_PER_TTL):
            # None: another worker renewed it first, which is as good.
            store.replace_if(record.renewed(now).to_bytes(), current[1])

    def release(self) -> bool:
        """Deletes the lease if it is still this job's; -> whether it did."""
        store = store_for(self.prefix, self._options)
        current = store.read()
        record = None if current is None else _parse_or_reason(current[0])[0]
        if record is None or record.token != self.token:
            return False
        return store.delete_if(current[1])
