"""What a run would set off in the account's workflows, counted on the plain
loop (pipeline/plain_backfill.py) that `check` and the backfill's guard run.

`TriggerScan` takes each upsert and each contact's event sends as a backfill
would send them, and holds every change against the workflows
(transforms/loops/triggers.py), a contact's requests in their order (its
upsert, then its events: an event finds the contact its upsert made). What
is known of a contact before its first request comes from, in order:

- a lookup (`ContactLookup`, GET /v1/contacts/find, at most --lookup
  contacts): Loops' own values, exact;
- the sync state (--state): a contact this tool delivered exists, with the
  digests of the values it delivered (decided as far as equality decides);
  a contact this tool deleted, with nothing recorded since, does not;
- nothing: whether Loops has the contact, and its values, are unknown
  ("at most").

The sync state knows what this tool delivered, not what else changed the
contact since (the app, a form, someone in Loops): its answers assume
nothing did.
"""
import dataclasses
from typing import Iterable, Optional

from transforms.core.digests import contact_digest
from transforms.core.records import LoopsRequest
from transforms.loops.account import find_contact
from transforms.loops.client import LoopsClient
from transforms.loops.retry import AuthError, LoopsError
from transforms.loops.triggers import (NEW_CONTACT, UNKNOWN_CONTACT, ContactBefore,
                                       TriggerTally, after_change, found_contact, property_keys,
                                       request_change, verdicts)
from transforms.state.files import CONTACTS
from transforms.state.workflow_count import before_from_facts

# What an event send's count reads besides the triggers' properties, and
# `subscribed`, from which check counts the opt-outs and re-subscriptions sent.
EVENT_KEYS = frozenset({'eventName', 'email', 'userId', 'subscribed'})


class ContactLookup:
    """Finds contacts in Loops, at most `limit` of them (each find is a
    request at the rate limit; a contact with a userId and an email may
    take two). Counts what it looked up and found."""

    def __init__(self, client: LoopsClient, limit: int):
        self._client = client
        self.limit = limit
        self.looked_up = 0
        self.found = 0

    def close(self) -> None:
        self._client.close()

    def before(self, request: LoopsRequest) -> Optional[ContactBefore]:
        """What Loops holds of the request's contact (NEW_CONTACT when it has
        none), or None once the limit is spent or when Loops would not say."""
        if self.looked_up >= self.limit:
            return None
        body = request.body
        user_id, email = body.get('userId'), body.get('email')
        self.looked_up += 1
        try:
            contact = find_contact(self._client, user_id if isinstance(user_id, str) else None,
                                   email if isinstance(email, str) else None)
        except AuthError:
            raise
        except (LoopsError, ValueError):
            return None
        if contact is None:
            return NEW_CONTACT
        self.found += 1
        return found_contact(contact)


class TriggerScan:
    """A run's requests -> how many times each workflow would take a
    contact in (`counts()`: workflow id -> triggers.Count).

    `delivered`: the sync state's facts as transforms/state/files.read_facts
    gives them, or None; `lookup`: a ContactLookup, or None."""

    def __init__(self, workflows: Iterable, delivered: Optional[dict] = None,
                 lookup: Optional[ContactLookup] = None):
        self.workflows = tuple(workflows)
        self.keys = property_keys(self.workflows)
        self.lookup = lookup
        self._delivered = delivered
        self._tally = TriggerTally(self.workflows)
        self._after_upsert = {}   # contact -> ContactBefore, for its events
        self.before_unknown = 0   # contacts whose state in Loops was not known

    def slim(self, request: LoopsRequest) -> LoopsRequest:
        """An event send with only what the count reads of its body (its
        name, its ids, the properties the triggers read): the plain loop
        holds every event send until the end."""
        if request.spec.mergeable:
            return request
        body = {key: value for key, value in request.body.items()
                if key in self.keys or key in EVENT_KEYS}
        return dataclasses.replace(request, body=body)

    def upsert(self, request: LoopsRequest) -> None:
        """A contact's upsert, before any of its events."""
        known = self._changes(request.contact, self._before(request), [request])
        self._after_upsert[request.contact] = known

    def events(self, contact: str, requests: list) -> None:
        """A contact's event sends, in the order they are sent."""
        if not requests:
            return
        before = self._after_upsert.pop(contact, None) or self._before(requests[0])
        self._changes(contact, before, requests)

    def counts(self) -> dict:
        return self._tally.counts()

    def _changes(self, contact: str, before: ContactBefore, requests: list) -> ContactBefore:
        for request in requests:
            change = request_change(request, self.keys)
            self._tally.add(contact, verdicts(self.workflows, before, change))
            before = after_change(before, change)
        return before

    def _before(self, request: LoopsRequest) -> ContactBefore:
        if self.lookup is not None:
            found = self.lookup.before(request)
            if found is not None:
                return found
        if self._delivered is not None:
            before = before_from_facts(
                self._delivered.get((CONTACTS, contact_digest(request.contact))))
            if before is not UNKNOWN_CONTACT:
                return before
        self.before_unknown += 1
        return UNKNOWN_CONTACT

