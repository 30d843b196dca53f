"""Small text helpers shared by the steps, the jobs and their reports."""
import json
from typing import Any

try:
    import orjson
except ImportError:
    orjson = None


def compact_json(value: Any, sort_keys: bool = False) -> str:
    """Compact JSON text (no spaces, Unicode as it is); values JSON cannot
    hold become their str(). orjson writes it ten times faster than the json
    module; what orjson refuses (integers over 64 bits, lone surrogates)
    goes through the json module instead."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str,
                                option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode('utf-8')
        except TypeError:
            pass
    return json.dumps(value, ensure_ascii=False, separators=(',', ':'), sort_keys=sort_keys,
                      default=str)


def preview(value: Any, limit: int = 100) -> str:
    """repr(value), cut to `limit` characters with '...' after: enough of a
    value to recognise it in a message, never a whole event."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def format_duration(seconds: float) -> str:
    """'45s', '6m20s', '2h05m': a short duration for a person."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f'{seconds}s'
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f'{minutes}m{seconds:02d}s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h{minutes:02d}m'
