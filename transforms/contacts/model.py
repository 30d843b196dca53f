"""The contact model: every property's latest value wins, in any order.

A contact state is a dict from property to `(stamp, value)`: the value and
when (in event time) it was set, the stamp a Stamp's fields as a plain tuple
(Beam's coders encode plain tuples natively, but pickle a NamedTuple one by
one). Mailing lists are properties of their own,
one per list id, under the key `('mailingLists', list_id)`. Merging two
states keeps, for every property, the value with the later stamp (event
time, then Segment's receive time, then the messageId; two different values
under one stamp are ordered by the values themselves, so the choice never
depends on which came first).

`merge` is associative, commutative and idempotent, so the same function
serves every place that folds updates together, in whatever order and
grouping the runner delivers them: the backfill's combine (Beam lifts it
before the shuffle, and a repeated identify merges to the same result), a
stream's batches and its per-contact state, `check`, and the sync state.
"""
from typing import Any, Iterable, Optional

import apache_beam as beam

from transforms.core.kinds import MAILING_LISTS
from transforms.core.records import NO_STAMP, Stamp

ContactState = dict   # property (or ('mailingLists', list_id)) -> (stamp tuple, value)

# Values of equal stamps are ordered by type first, so mixed types compare.
_TYPE_RANK = {type(None): 0, bool: 1, int: 2, float: 2, str: 3}


def list_key(list_id: str) -> tuple:
    """The state key of one mailing list's membership."""
    return (MAILING_LISTS, list_id)


def apply_body(state: ContactState, body: dict, stamp: Stamp) -> ContactState:
    """Merges one request body, all of it set at `stamp`, into `state` (in
    place) and returns `state`. A `mailingLists` object becomes one
    property per list id. The body is not changed."""
    stamp = tuple(stamp)
    for key, value in body.items():
        if key == MAILING_LISTS and isinstance(value, dict):
            for list_id, flag in value.items():
                _put(state, (MAILING_LISTS, list_id), stamp, flag)
        else:
            _put(state, key, stamp, value)
    return state


def state_of(body: dict, stamp: Stamp) -> ContactState:
    """A request body, all of it set at `stamp`, as a contact state."""
    return apply_body({}, body, stamp)


def merge_into(target: ContactState, other: ContactState) -> ContactState:
    """Merges `other` into `target` (in place) and returns `target`."""
    for key, (stamp, value) in other.items():
        _put(target, key, stamp, value)
    return target


def merge(*states: ContactState) -> ContactState:
    """A new state holding, per property, the latest value of `states`."""
    merged = {}
    for state in states:
        merge_into(merged, state)
    return merged


def body_of(state: ContactState) -> dict:
    """The request body that sets the state's values (mailing lists gathered
    back into one `mailingLists` object)."""
    body = {}
    lists = {}
    for key, (_, value) in state.items():
        if type(key) is tuple:
            lists[key[1]] = value
        else:
            body[key] = value
    if lists:
        body[MAILING_LISTS] = lists
    return body


def latest_stamp(state: ContactState) -> Stamp:
    """The stamp of the state's most recent change (NO_STAMP when empty)."""
    return Stamp(*max((stamp for stamp, _ in state.values()), default=NO_STAMP))


def value_of(state: ContactState, key: Any) -> Any:
    """The current value of a property, None when the state has none."""
    entry = state.get(key)
    return None if entry is None else entry[1]


def newer_than(state: ContactState, applied: dict) -> ContactState:
    """The part of `state` whose stamps are later than those in `applied`
    (property -> Stamp): what a stream has not applied yet."""
    fresh = {}
    for key, entry in state.items():
        before = applied.get(key)
        if before is None or entry[0] > before:
            fresh[key] = entry
    return fresh


def stamps_of(state: ContactState) -> dict:
    """property -> stamp of a state (what was applied, without the values)."""
    return {key: stamp for key, (stamp, _) in state.items()}


def _put(state: ContactState, key: Any, stamp: Stamp, value: Any) -> None:
    current = state.get(key)
    if current is None or _later(stamp, value, current):
        state[key] = (stamp, value)


def _later(stamp: Stamp, value: Any, current: tuple) -> bool:
    current_stamp = current[0]
    if stamp != current_stamp:
        return stamp > current_stamp
    return _value_order(value) > _value_order(current[1])


def _value_order(value: Any) -> tuple:
    # Only two values under one stamp are ordered (a sender reusing a
    # messageId): by kind, value, then type and text, so that 1 and 1.0, or
    # 0.0 and -0.0, still have one winner whatever came first.
    rank = _TYPE_RANK.get(type(value))
    if rank is None:   # not a Loops scalar: ordered by its text
        return (4, 0, '', repr(value))
    return (rank, 0 if value is None else value, type(value).__name__, repr(value))


class MergeContactStates(beam.CombineFn):
    """CombinePerKey's view of `merge`: contact states in, their merge out.
    Accumulators are changed in place; inputs never are. They cross the
    shuffle pickled whole: Beam's default coder walks every stamp, at
    about twice the cost."""

    def get_accumulator_coder(self):
        return beam.coders.PickleCoder()

    def create_accumulator(self) -> ContactState:
        return {}

    def add_input(self, accumulator: ContactState, state: ContactState) -> ContactState:
        return merge_into(accumulator, state)

    def merge_accumulators(self, accumulators: Iterable[ContactState]) -> ContactState:
        # Beam lets the first accumulator be changed and returned.
        accumulators = iter(accumulators)
        merged = next(accumulators, None)
        if merged is None:
            return {}
        for accumulator in accumulators:
            merge_into(merged, accumulator)
        return merged

    def extract_output(self, accumulator: ContactState) -> ContactState:
        return accumulator

    def compact(self, accumulator: ContactState) -> ContactState:
        return accumulator


def email_of(state: ContactState) -> Optional[str]:
    """The contact's latest email, if its state has one."""
    value = value_of(state, 'email')
    return value if isinstance(value, str) else None
