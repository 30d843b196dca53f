"""Epoch milliseconds -> the time texts Segment archives hold, fast.

Formatting times is the hot spot of generating millions of events, so the
texts of days and of the seconds of a day are built once and looked up.
"""
import datetime
import functools

from transforms.segment.timestamps import DAY_MS

_EPOCH = datetime.date(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _date_text(day_number: int) -> str:
    return (_EPOCH + datetime.timedelta(days=day_number)).isoformat()


@functools.lru_cache(maxsize=1)
def _clock_texts() -> tuple[str, ...]:
    # Every 'HH:MM:SS' of a day.
    return tuple(f'{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}'
                 for second in range(DAY_MS // 1000))


def clock(ms: int) -> tuple[str, str, int]:
    """Epoch ms -> ('YYYY-MM-DD', 'HH:MM:SS', milliseconds), UTC."""
    day_number, rest = divmod(ms, DAY_MS)
    second, milli = divmod(rest, 1000)
    return _date_text(day_number), _clock_texts()[second], milli


def iso_ms(ms: int) -> str:
    """Epoch milliseconds -> Segment's own form, '2026-11-01T09:30:00.123Z'."""
    date, time_text, milli = clock(ms)
    return f'{date}T{time_text}.{milli:03d}Z'


def odd_timestamp(form: str, ms: int) -> object:
    """Epoch ms -> `timestamp` as a sender of TIMESTAMP_ODD_FORMS' `form` writes it
    (events.py); None for 'null' ('missing' leaves the key out, never gets here)."""
    if form == '+00:00':    # analytics-python: microseconds and an offset
        date, time_text, milli = clock(ms)
        return f'{date}T{time_text}.{milli:03d}000+00:00'
    if form == '+0530':
        date, time_text, milli = clock(ms + 19_800_000)
        return f'{date}T{time_text}.{milli:03d}+0530'
    if form == 'no zone':
        date, time_text, _ = clock(ms)
        return f'{date}T{time_text}'
    if form == 'year only':
        return '2016'
    if form == 'unpadded month':
        return '2015-2-02'
    if form == 'epoch ms':
        return ms
    return None


def day_start_ms(day: str) -> int:
    """'2026-11-01' -> that day's 00:00 UTC in epoch ms."""
    return (datetime.date.fromisoformat(day) - _EPOCH).days * DAY_MS
