"""Parsing one Segment event: text (or an Avro-decoded dict) -> ParsedEvent.

INTERFACE STUB: the implementation is being written; the names below are the
contract other modules rely on.
"""
from typing import NamedTuple, Optional


class Rejected(Exception):
    """An input that cannot become a Loops request. `reason` is a short stable
    code (it becomes the failure record's `reason`), `message` is for a person."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class ParsedEvent(NamedTuple):
    type: str                 # identify, track, page, screen, group, alias
    message_id: str           # '' when the event has none
    user_id: Optional[str]    # stringified; None when missing, null or empty
    order: tuple              # (event time ms, received time ms, message_id)
    data: dict                # the event object as it arrived
    source: str               # file path or Pub/Sub message id
