"""The data of one Loops team: contacts, events, custom properties, mailing
lists, workflows and event patterns, spent idempotency keys and the
triggers set off, with the lookups and changes Loops' endpoints make."""
import copy
from itertools import count
from typing import Iterable, Optional

from pipeline.local import csv_import
from pipeline.local.rules import (DEFAULT_PROPERTIES, ApiError, apply_to_contact,
                                  check_contact_body, identity_of)
from pipeline.local.workflows import AccountWorkflows

# "in the previous 24 hours" (OAS 1544-1561)
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# A list's description is text or null (OAS `MailingList` 5096-5134; the JS SDK
# README's listMailingLists example has both).
DEFAULT_MAILING_LISTS = (
    {'id': 'list_news', 'name': 'Newsletter',
     'description': 'Company news, once a month', 'isPublic': True},
    {'id': 'list_product', 'name': 'Product updates', 'description': None, 'isPublic': False},
)


class LoopsAccount:
    """One Loops team's data. Not thread-safe: the sandbox calls it under a lock.

    `contacts` seeds the account: each is a contact's properties (an email at
    least), the other default fields filled as for a new contact, and the
    account returns to them when it forgets its activity. Seeds set off no
    workflow: they are there before the test begins. `workflows` and
    `event_patterns` are fixtures (workflows.py).
    """

    def __init__(self, team_name: str, mailing_lists: Iterable[dict],
                 custom_properties: Iterable[dict], contacts: Iterable[dict] = (),
                 workflows: Iterable[dict] = (), event_patterns: Iterable[dict] = ()):
        self.team_name = team_name
        self.mailing_lists = [dict(item) for item in mailing_lists]
        self.custom_properties = [dict(item) for item in custom_properties]
        self.workflows = AccountWorkflows(workflows, event_patterns)
        # Set by the API's null_event_properties setting (api.py).
        self.refuse_null_event_properties = True
        self.contacts: list[dict] = []
        self.events: list[dict] = []
        self.idempotency_keys: dict[str, float] = {}
        self._contact_numbers = count(1)
        self._seeds = [copy.deepcopy(dict(contact)) for contact in contacts]
        self._add_seeds()

    def forget_activity(self) -> None:
        """Back to the seeded contacts, no events, no spent idempotency keys,
        no triggers set off; lists, properties, workflows and event patterns stay."""
        self.contacts.clear()
        self.events.clear()
        self.idempotency_keys.clear()
        self.workflows.forget_activity()
        self._add_seeds()

    def _add_seeds(self) -> None:
        for number, seed in enumerate(self._seeds):
            try:
                self._create(seed)
            except ApiError as error:
                raise ValueError(f'contacts[{number}]: {error.message}') from None

    @property
    def list_ids(self) -> frozenset:
        """The ids of the mailing lists contacts may be put on."""
        return frozenset(item['id'] for item in self.mailing_lists)

    def property_types(self) -> dict[str, str]:
        """Property name -> its type (string, number, boolean or date), the
        default properties' included."""
        return {item['key']: item['type']
                for item in DEFAULT_PROPERTIES + tuple(self.custom_properties)}

    def import_csv(self, text: str) -> dict:
        """An audience import by CSV (csv_import.py): {created, updated, errors}."""
        return csv_import.import_csv(self, text)

    # ---- contacts

    def create_contact(self, body: dict) -> dict:
        """A new contact with the properties of `body` (an email at least);
        ApiError 400 for an invalid body, 409 when its email or userId is taken."""
        contact = self._create(body)
        self.workflows.contact_changed(None, contact)
        return contact

    def _create(self, body: dict) -> dict:
        email, user_id = identity_of(body)
        if email is None:
            raise ApiError(400, 'An email is required to create a contact.')
        check_contact_body(body, self.list_ids, self.property_types())
        # 409 "Email or `userId` already exists." (OAS 685-702)
        if self.by_email(email) or (user_id is not None and self.by_user_id(user_id)):
            raise ApiError(409, 'Email or userId is already on list.')
        contact = self.new_contact()
        apply_to_contact(contact, body)
        return contact

    def add_contact(self, properties: dict) -> dict:
        """A new contact through the API with checked `properties`: a
        SignupTrigger's workflows and any other trigger it matches go off."""
        contact = self.new_contact()
        apply_to_contact(contact, properties)
        self.workflows.contact_changed(None, contact)
        return contact

    def change_contact(self, contact: dict, properties: dict) -> None:
        """Merges checked `properties` into `contact` through the API; the
        triggers of the changes go off."""
        before = copy.deepcopy(contact)
        apply_to_contact(contact, properties)
        self.workflows.contact_changed(before, contact)

    def new_contact(self) -> dict:
        """Adds and returns a contact with every default field at its
        default: the fields find always returns (OpenAPI `Contact`,
        loops-openapi.yaml 4161-4240; JS SDK README "Default contact
        properties" and the findContact example): `userGroup` "" when unset,
        `optInStatus` null (only forms with double opt-in set it), `source`
        "API" (https://loops.so/docs/contacts/properties), subscribed ("All
        new contacts are subscribed by default.", OAS `ContactFields`)."""
        contact = {'id': f'contact-{next(self._contact_numbers)}', 'email': None,
                   'firstName': None, 'lastName': None, 'source': 'API', 'subscribed': True,
                   'userGroup': '', 'userId': None, 'mailingLists': {}, 'optInStatus': None}
        self.contacts.append(contact)
        return contact

    def by_email(self, email: str) -> Optional[dict]:
        """The contact with this email (Loops compares addresses case-insensitively)."""
        wanted = email.lower()
        return next((c for c in self.contacts
                     if c['email'] is not None and c['email'].lower() == wanted), None)

    def by_user_id(self, user_id: str) -> Optional[dict]:
        """The contact with this userId, or None."""
        return next((c for c in self.contacts if c['userId'] == user_id), None)

    def upsert_match(self, email: Optional[str], user_id: Optional[str]) -> Optional[dict]:
        """The contact an upsert changes: the one either id finds ("the system
        will look for a contact with either a matching `email` or `userId`
        value", OAS 712-731). When they find two different contacts: 409
        (unconfirmed: assumed stricter; Loops documents only 200/400/405 for
        update, OAS 766-780, and merging or picking one would hide it)."""
        by_email = self.by_email(email) if email is not None else None
        by_user_id = self.by_user_id(user_id) if user_id is not None else None
        if by_email is not None and by_user_id is not None and by_email is not by_user_id:
            raise ApiError(409, 'The email and the userId belong to different contacts.')
        return by_user_id or by_email

    # ---- idempotency keys

    def key_in_use(self, key: Optional[str], now: float) -> bool:
        """Whether `key` was spent less than 24 hours before `now`."""
        used_at = self.idempotency_keys.get(key) if key is not None else None
        return used_at is not None and now - used_at < IDEMPOTENCY_TTL_SECONDS

    def spend_key(self, key: Optional[str], now: float) -> None:
        """Marks `key` used at `now` (nothing for a request without one)."""
        if key is not None:
            self.idempotency_keys[key] = now
