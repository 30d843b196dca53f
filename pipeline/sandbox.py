"""A local, Loops-compatible HTTP server for the demo, the tests and the benchmarks.

The real Loops API cannot be reached from this project's machines, so
`LoopsSandbox` plays it in-process (standard library only): the endpoints, the
validation and upsert rules of /work/shared/reference/loops-api.md, the
per-team rate limit with its headers, and faults injected on purpose (500s,
dropped connections, slow answers, outages) to exercise a client's retries.

Use it as a context manager and point a client at `base_url`::

    with LoopsSandbox('key', rate_limit=10, fail_after=0.1, seed=7) as sandbox:
        ...  # requests against sandbox.base_url with 'Authorization: Bearer key'
        sandbox.state()['events']

`segment-loops sandbox` (`main`) runs the same server on its own.
"""
import argparse
import copy
import hmac
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from random import Random
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from transforms.records import (CONTACT_UPDATE_PATH, EVENT_SEND_PATH,
                                IDEMPOTENCY_HEADER)

API_PREFIX = '/api'
SANDBOX_PREFIX = '/_sandbox/'
MAX_BODY_BYTES = 1_000_000
# A body over the limit is still read (up to this much) so that the 413 reaches
# the client instead of a connection reset.
MAX_DRAINED_BYTES = 16 * MAX_BODY_BYTES
MAX_STRING = 500
MAX_IDEMPOTENCY_KEY = 100
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
RATE_WINDOW_SECONDS = 1.0
# Sent as x-ratelimit-limit when limiting is off: clients that read the header
# keep working and see a budget they will never exhaust.
UNLIMITED_RATE = 1_000_000

RESERVED_NAMES = frozenset({'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'})
DEFAULT_PROPERTIES = (
    {'key': 'email', 'label': 'Email', 'type': 'string'},
    {'key': 'firstName', 'label': 'First Name', 'type': 'string'},
    {'key': 'lastName', 'label': 'Last Name', 'type': 'string'},
    {'key': 'source', 'label': 'Source', 'type': 'string'},
    {'key': 'subscribed', 'label': 'Subscribed', 'type': 'boolean'},
    {'key': 'userGroup', 'label': 'User Group', 'type': 'string'},
    {'key': 'userId', 'label': 'User ID', 'type': 'string'},
)
PROPERTY_TYPES = ('string', 'number', 'boolean', 'date')
DEFAULT_MAILING_LISTS = (
    {'id': 'list_news', 'name': 'Newsletter',
     'description': 'Company news, once a month', 'isPublic': True},
    {'id': 'list_product', 'name': 'Product updates',
     'description': 'New features and changes', 'isPublic': False},
)
EVENT_ONLY_KEYS = frozenset({'eventName', 'eventProperties'})
# For events, email and userId only find (or create) the contact.
EVENT_NON_PROPERTY_KEYS = frozenset({'eventName', 'eventProperties', 'email',
                                     'userId', 'mailingLists'})

EMAIL_PATTERN = re.compile(r'^[^@\s]+@[^@\s]+\.[^@\s]+$')
PROPERTY_NAME_PATTERN = re.compile(r'^[a-z][A-Za-z0-9]*$')
TOO_LONG = 'Some body key or value is longer than allowable'
NOT_AN_OBJECT = 'The request body must be a JSON object.'
SERVER_ERROR = {'success': False, 'message': 'Internal server error'}

DEFAULT_SETTINGS = {
    'rate_limit': 10.0,
    'latency': (0.0, 0.0),
    'fail_before': 0.0,
    'fail_after': 0.0,
    'drop_before': 0.0,
    'drop_after': 0.0,
    'slow_after': 0.0,
    'slow_seconds': 2.0,
}
SHARE_SETTINGS = ('fail_before', 'fail_after', 'drop_before', 'drop_after',
                  'slow_after')


class ApiError(Exception):
    """A Loops error answer: HTTP `status` with `{"success": false, "message"}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiCall:
    """What an endpoint needs from one HTTP request (never the Authorization header)."""
    query: dict
    body: bytes
    idempotency_key: Optional[str]


# ----------------------------------------------------------------- validation

def parse_json_object(raw: bytes) -> dict:
    """A request body -> the JSON object it holds; ApiError 400 otherwise.

    NaN and Infinity are refused, as a strict JSON parser would.
    """
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError:
        raise ApiError(400, NOT_AN_OBJECT) from None
    if not isinstance(value, dict):
        raise ApiError(400, NOT_AN_OBJECT)
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON')


def identity_of(body: dict) -> tuple[Optional[str], Optional[str]]:
    """A contact or event body -> its (email, userId), None for a missing key.

    A key that is present must hold a usable value (ApiError 400).
    """
    email = body.get('email')
    if 'email' in body and not (isinstance(email, str) and EMAIL_PATTERN.match(email)):
        raise ApiError(400, 'Invalid email address.')
    user_id = body.get('userId')
    if 'userId' in body and not (isinstance(user_id, str) and user_id):
        raise ApiError(400, 'userId must be a non-empty string.')
    return email, user_id


def check_scalar(name: str, value: Any) -> None:
    """ApiError 400 unless `value` is a string (<= 500 chars), number, boolean or null."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f'Invalid value for "{name}": numbers must be finite.')
    if not isinstance(value, (str, int, float, bool, type(None))):
        raise ApiError(400, f'Invalid value for "{name}": nested objects and '
                            'arrays are not valid property values.')
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ApiError(400, TOO_LONG)


def check_mailing_lists(value: Any, list_ids: frozenset) -> None:
    """ApiError 400 unless `value` maps known mailing-list ids to booleans."""
    if not isinstance(value, dict) or not all(isinstance(v, bool) for v in value.values()):
        raise ApiError(400, 'mailingLists must be an object of mailing list id -> true/false.')
    unknown = sorted(set(value) - list_ids)
    if unknown:
        raise ApiError(400, f'Unknown mailing list id: {unknown[0]}.')


def check_contact_body(body: dict, list_ids: frozenset,
                       skip: frozenset = frozenset()) -> None:
    """ApiError 400 unless every top-level key of `body` (but `skip`) is a valid
    contact property: not reserved, not too long, a scalar or valid mailingLists."""
    for key, value in body.items():
        if len(key) > MAX_STRING:
            raise ApiError(400, TOO_LONG)
        if key in skip:
            continue
        if key in RESERVED_NAMES:
            raise ApiError(400, f'"{key}" is a reserved name and cannot be a contact property.')
        if key == 'mailingLists':
            check_mailing_lists(value, list_ids)
        elif key == 'subscribed' and not isinstance(value, bool):
            raise ApiError(400, 'subscribed must be true or false.')
        else:
            check_scalar(key, value)


def check_event_properties(value: Any) -> None:
    """ApiError 400 unless `value` is an object of scalar values."""
    if not isinstance(value, dict):
        raise ApiError(400, 'eventProperties must be an object.')
    for key, item in value.items():
        if len(key) > MAX_STRING:
            raise ApiError(400, TOO_LONG)
        check_scalar(f'eventProperties.{key}', item)


def check_idempotency_key(key: Optional[str]) -> None:
    """ApiError 400 when an Idempotency-Key header is over 100 characters."""
    if key is not None and len(key) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, f'Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters.')


def single_query_value(query: dict, name: str) -> Optional[str]:
    """The one value of query parameter `name`, None when absent; 400 when repeated."""
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise ApiError(400, f'Give {name} only once.')
    return values[0]


def apply_to_contact(contact: dict, properties: dict) -> None:
    """Merges validated `properties` into `contact` (mailingLists merged per list)."""
    for key, value in properties.items():
        if key == 'mailingLists':
            contact['mailingLists'].update(value)
        else:
            contact[key] = value


def property_label(name: str) -> str:
    """'planTier' -> 'Plan Tier', the label Loops shows for a property."""
    return re.sub(r'(?<!^)(?=[A-Z])', ' ', name).title()


# -------------------------------------------------------------------- account

class LoopsAccount:
    """The data of one Loops team and the endpoints that read and change it.

    Not thread-safe: `LoopsSandbox` calls it under its store lock. Each endpoint
    method takes an `ApiCall` and returns the 200 JSON payload or raises ApiError.
    """

    def __init__(self, team_name: str, mailing_lists: list[dict],
                 custom_properties: list[dict]):
        self.team_name = team_name
        self.mailing_lists = [dict(item) for item in mailing_lists]
        self.custom_properties = [dict(item) for item in custom_properties]
        self.contacts: list[dict] = []
        self.events: list[dict] = []
        self.idempotency_keys: dict[str, float] = {}
        self._contact_numbers = count(1)

    def forget_activity(self) -> None:
        """Drops contacts, events and idempotency keys; keeps lists and properties."""
        self.contacts.clear()
        self.events.clear()
        self.idempotency_keys.clear()

    @property
    def list_ids(self) -> frozenset:
        """The ids of the mailing lists contacts may be put on."""
        return frozenset(item['id'] for item in self.mailing_lists)

    # ---- endpoints

    def check_api_key(self, call: ApiCall) -> dict:
        """GET /v1/api-key: the team name of a valid key."""
        return {'success': True, 'teamName': self.team_name}

    def get_lists(self, call: ApiCall) -> list:
        """GET /v1/lists: [{id, name, description, isPublic}]."""
        return copy.deepcopy(self.mailing_lists)

    def get_properties(self, call: ApiCall) -> list:
        """GET /v1/contacts/properties?list=custom|all: [{key, label, type}]."""
        which = single_query_value(call.query, 'list') or 'all'
        if which not in ('all', 'custom'):
            raise ApiError(400, 'list must be "custom" or "all".')
        defaults = list(DEFAULT_PROPERTIES) if which == 'all' else []
        return copy.deepcopy(defaults + self.custom_properties)

    def create_property(self, call: ApiCall) -> dict:
        """POST /v1/contacts/properties {name, type}: adds a custom property."""
        body = parse_json_object(call.body)
        name, kind = body.get('name'), body.get('type')
        if not (isinstance(name, str) and PROPERTY_NAME_PATTERN.match(name)):
            raise ApiError(400, 'name must be a camelCase string.')
        if len(name) > MAX_STRING:
            raise ApiError(400, TOO_LONG)
        if name in RESERVED_NAMES:
            raise ApiError(400, f'"{name}" is a reserved name and cannot be a contact property.')
        existing = {item['key'] for item in DEFAULT_PROPERTIES + tuple(self.custom_properties)}
        if name in existing:
            raise ApiError(400, f'A property named "{name}" already exists.')
        if kind not in PROPERTY_TYPES:
            raise ApiError(400, f'type must be one of {", ".join(PROPERTY_TYPES)}.')
        self.custom_properties.append({'key': name, 'label': property_label(name), 'type': kind})
        return {'success': True}

    def create_contact(self, call: ApiCall) -> dict:
        """POST /v1/contacts/create: a new contact; 409 when its email or userId is taken."""
        body = parse_json_object(call.body)
        email, user_id = identity_of(body)
        if email is None:
            raise ApiError(400, 'An email is required to create a contact.')
        check_contact_body(body, self.list_ids)
        if self._by_email(email) or (user_id is not None and self._by_user_id(user_id)):
            raise ApiError(409, 'Email or userId is already on list.')
        contact = self._new_contact()
        apply_to_contact(contact, body)
        return {'success': True, 'id': contact['id']}

    def update_contact(self, call: ApiCall) -> dict:
        """PUT /v1/contacts/update: the upsert (match by either id, merge, create)."""
        body = parse_json_object(call.body)
        email, user_id = identity_of(body)
        if email is None and user_id is None:
            raise ApiError(400, 'Provide an email or a userId.')
        check_contact_body(body, self.list_ids)
        contact = self._upsert_match(email, user_id)
        if contact is None:
            if email is None:
                raise ApiError(400, 'userId not found and cannot create a new '
                                    'contact without an email.')
            contact = self._new_contact()
        apply_to_contact(contact, body)
        return {'success': True, 'id': contact['id']}

    def find_contacts(self, call: ApiCall) -> list:
        """GET /v1/contacts/find?email=|userId=: [contact] or []."""
        email = single_query_value(call.query, 'email')
        user_id = single_query_value(call.query, 'userId')
        if (email is None) == (user_id is None):
            raise ApiError(400, 'Provide exactly one of email or userId.')
        contact = self._by_email(email) if email is not None else self._by_user_id(user_id)
        return [copy.deepcopy(contact)] if contact else []

    def delete_contact(self, call: ApiCall) -> dict:
        """POST /v1/contacts/delete {email | userId}: removes the contact; 404 when none."""
        body = parse_json_object(call.body)
        if ('email' in body) == ('userId' in body):
            raise ApiError(400, 'Provide exactly one of email or userId.')
        email, user_id = identity_of(body)
        contact = self._by_email(email) if email is not None else self._by_user_id(user_id)
        if contact is None:
            raise ApiError(404, 'Contact not found.')
        self.contacts.remove(contact)
        return {'success': True, 'message': 'Contact deleted.'}

    def send_event(self, call: ApiCall) -> dict:
        """POST /v1/events/send: records the event on the contact either id finds."""
        check_idempotency_key(call.idempotency_key)
        body = parse_json_object(call.body)
        event_name = body.get('eventName')
        if not (isinstance(event_name, str) and event_name):
            raise ApiError(400, 'eventName is required.')
        check_scalar('eventName', event_name)
        email, user_id = identity_of(body)
        if email is None and user_id is None:
            raise ApiError(400, 'Provide an email or a userId.')
        check_contact_body(body, self.list_ids, skip=EVENT_ONLY_KEYS)
        event_properties = body.get('eventProperties', {})
        check_event_properties(event_properties)
        now = time.time()
        if self._key_in_use(call.idempotency_key, now):
            raise ApiError(409, 'Idempotency key has already been used')
        # Either id finds the contact; the userId (the customer's stable id)
        # wins when they point at different contacts.
        contact = ((user_id is not None and self._by_user_id(user_id))
                   or (email is not None and self._by_email(email)) or None)
        if contact is None:
            if email is None:
                raise ApiError(400, 'Contact not found.')
            contact = self._new_contact()
            apply_to_contact(contact, {'email': email, 'userId': user_id})
        properties = {k: v for k, v in body.items() if k not in EVENT_NON_PROPERTY_KEYS}
        properties['mailingLists'] = body.get('mailingLists', {})
        apply_to_contact(contact, properties)
        if call.idempotency_key is not None:
            self.idempotency_keys[call.idempotency_key] = now
        self.events.append({
            'eventName': event_name, 'email': email, 'userId': user_id,
            'eventProperties': copy.deepcopy(event_properties),
            'idempotency_key': call.idempotency_key,
            'contact_id': contact['id'], 'received_at': now,
        })
        return {'success': True}

    # ---- contact lookups

    def _new_contact(self) -> dict:
        contact = {'id': f'contact-{next(self._contact_numbers)}', 'email': None,
                   'userId': None, 'firstName': None, 'lastName': None,
                   'source': 'API', 'subscribed': True, 'userGroup': None,
                   'mailingLists': {}}
        self.contacts.append(contact)
        return contact

    def _by_email(self, email: str) -> Optional[dict]:
        # Loops treats addresses case-insensitively.
        wanted = email.lower()
        return next((c for c in self.contacts
                     if c['email'] is not None and c['email'].lower() == wanted), None)

    def _by_user_id(self, user_id: str) -> Optional[dict]:
        return next((c for c in self.contacts if c['userId'] == user_id), None)

    def _upsert_match(self, email: Optional[str], user_id: Optional[str]) -> Optional[dict]:
        by_email = self._by_email(email) if email is not None else None
        by_user_id = self._by_user_id(user_id) if user_id is not None else None
        if by_email is not None and by_user_id is not None and by_email is not by_user_id:
            raise ApiError(409, 'The email and the userId belong to different contacts.')
        return by_user_id or by_email

    def _key_in_use(self, key: Optional[str], now: float) -> bool:
        used_at = self.idempotency_keys.get(key) if key is not None else None
        return used_at is not None and now - used_at < IDEMPOTENCY_TTL_SECONDS


# (path under /api) -> {method: endpoint}
ROUTES: dict[str, dict[str, Callable[[LoopsAccount, ApiCall], Any]]] = {
    '/v1/api-key': {'GET': LoopsAccount.check_api_key},
    '/v1/contacts/create': {'POST': LoopsAccount.create_contact},
    CONTACT_UPDATE_PATH: {'PUT': LoopsAccount.update_contact},
    '/v1/contacts/find': {'GET': LoopsAccount.find_contacts},
    '/v1/contacts/delete': {'POST': LoopsAccount.delete_contact},
    '/v1/contacts/properties': {'GET': LoopsAccount.get_properties,
                                'POST': LoopsAccount.create_property},
    '/v1/lists': {'GET': LoopsAccount.get_lists},
    EVENT_SEND_PATH: {'POST': LoopsAccount.send_event},
}


def route(account: LoopsAccount, method: str, path: str,
          call: ApiCall) -> tuple[int, Any]:
    """One API request -> (HTTP status, JSON payload), changing `account` on success."""
    endpoints = ROUTES.get(path)
    if endpoints is None:
        return 404, {'success': False, 'message': 'Not found'}
    endpoint = endpoints.get(method)
    if endpoint is None:
        return 405, {'success': False, 'message': 'Method not allowed'}
    try:
        return 200, endpoint(account, call)
    except ApiError as error:
        return error.status, {'success': False, 'message': error.message}


# ----------------------------------------------------------------- settings

def validated_settings(settings: dict) -> dict:
    """Sandbox settings as given -> normalised copies; ValueError for a bad name or value."""
    result = {}
    for name, value in settings.items():
        if name not in DEFAULT_SETTINGS:
            raise ValueError(f'unknown sandbox setting {name!r}; known: '
                             f'{", ".join(sorted(DEFAULT_SETTINGS))}')
        if name == 'rate_limit':
            if value is not None and (not _is_number(value) or value < 0):
                raise ValueError('rate_limit must be None or a number >= 0')
            result[name] = float(value) if value else None
        elif name == 'latency':
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(_is_number(v) for v in value)
                    or not 0 <= value[0] <= value[1]):
                raise ValueError('latency must be (low, high) seconds with 0 <= low <= high')
            result[name] = (float(value[0]), float(value[1]))
        elif name == 'slow_seconds':
            if not _is_number(value) or value < 0:
                raise ValueError('slow_seconds must be a number >= 0')
            result[name] = float(value)
        else:
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f'{name} must be a share between 0 and 1')
            result[name] = float(value)
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def pick_fault(draw: float, shares: list[tuple[str, float]]) -> Optional[str]:
    """A uniform draw in [0, 1) -> the fault whose share it falls in, or None.

    The shares are stacked, so each fault hits its own share of the requests.
    """
    edge = 0.0
    for name, share in shares:
        edge += share
        if draw < edge:
            return name
    return None


def limit_header(limit: Optional[float]) -> str:
    """The rate limit setting -> its x-ratelimit-limit text ('10', not '10.0')."""
    if not limit:
        return str(UNLIMITED_RATE)
    return str(int(limit)) if limit.is_integer() else str(limit)


@dataclass(frozen=True)
class Admission:
    """The rate limiter's answer for one request, with its random draws."""
    accepted: bool
    remaining: int
    latency: float = 0.0
    fault_before: Optional[str] = None
    fault_after: Optional[str] = None
    slow_seconds: float = 0.0


class RateWindow:
    """A sliding window over the times of accepted requests (monotonic seconds)."""

    def __init__(self) -> None:
        self._accepted: deque = deque()

    def clear(self) -> None:
        self._accepted.clear()

    def remaining(self, limit: Optional[float], now: float) -> int:
        """How many more requests `limit` lets in right now."""
        if not limit:
            return UNLIMITED_RATE
        self._forget_before(now - RATE_WINDOW_SECONDS)
        return max(0, math.ceil(limit - len(self._accepted)))

    def admit(self, limit: Optional[float], now: float) -> tuple[bool, int]:
        """(accepted, remaining after this request); records the request if accepted."""
        if not limit:
            return True, UNLIMITED_RATE
        self._forget_before(now - RATE_WINDOW_SECONDS)
        if len(self._accepted) >= limit:
            return False, max(0, math.ceil(limit - len(self._accepted)))
        self._accepted.append(now)
        return True, max(0, math.ceil(limit - len(self._accepted)))

    def _forget_before(self, cutoff: float) -> None:
        while self._accepted and self._accepted[0] <= cutoff:
            self._accepted.popleft()


# -------------------------------------------------------------------- sandbox

class LoopsSandbox:
    """A Loops-compatible API server on a local port, with fault injection.

    In: the API key clients must send, the team's name, mailing lists and
    custom properties, the rate limit and latency, fault shares (see
    DEFAULT_SETTINGS) and a seed for the random draws. `start()` serves in a
    daemon thread; `base_url` is what a client uses; `state()` shows what the
    server stored and received.
    """

    def __init__(self, api_key: str = 'sandbox-key', *, team_name: str = 'Sandbox team',
                 host: str = '127.0.0.1', port: int = 0, rate_limit: Optional[float] = 10.0,
                 latency: tuple[float, float] = (0.0, 0.0),
                 mailing_lists: Optional[list[dict]] = None,
                 custom_properties: Optional[list[dict]] = None,
                 seed: Optional[int] = None, **faults: float):
        if not isinstance(api_key, str) or not api_key:
            raise ValueError('api_key must be a non-empty string')
        self._api_key = api_key
        self._host = host
        self._port = port
        self._settings = dict(DEFAULT_SETTINGS)
        self._settings.update(validated_settings(
            {'rate_limit': rate_limit, 'latency': latency, **faults}))
        self._account = LoopsAccount(
            team_name,
            list(DEFAULT_MAILING_LISTS) if mailing_lists is None else mailing_lists,
            custom_properties or [])
        self._random = Random(seed)
        self._window = RateWindow()
        self._requests: list[dict] = []
        self._outage_until = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[_SandboxServer] = None
        self._thread: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else 'stopped'
        return f'LoopsSandbox({where})'

    def __enter__(self) -> 'LoopsSandbox':
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> 'LoopsSandbox':
        """Binds the port and serves in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError('the sandbox is already running')
        server = _SandboxServer((self._host, self._port), self)
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={'poll_interval': 0.05},
            name='loops-sandbox', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, closes the listening socket and every open connection."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        """'http://<host>:<port>/api' of the running server."""
        if self._server is None:
            raise RuntimeError('the sandbox is not running')
        return f'http://{self._host}:{self._server.server_address[1]}{API_PREFIX}'

    def configure(self, **settings: Any) -> None:
        """Changes rate_limit, latency or fault settings live; ValueError for bad ones."""
        valid = validated_settings(settings)
        with self._lock:
            self._settings.update(valid)

    def outage(self, seconds: float) -> None:
        """For the next `seconds`, every API request's connection is dropped unanswered."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds

    def state(self) -> dict:
        """A deep copy of {'contacts', 'events', 'requests'} (JSON-ready)."""
        with self._lock:
            return copy.deepcopy({'contacts': self._account.contacts,
                                  'events': self._account.events,
                                  'requests': self._requests})

    def reset(self) -> None:
        """Forgets contacts, events, idempotency keys, the request log, the rate
        window and any outage. Settings, lists and custom properties stay."""
        with self._lock:
            self._account.forget_activity()
            self._requests.clear()
            self._window.clear()
            self._outage_until = 0.0

    # ---- used by the request handler

    def _log_request(self, method: str, path: str, idempotency_key: Optional[str]) -> dict:
        entry = {'t': time.time(), 'method': method, 'path': path, 'status': None,
                 'idempotency_key': idempotency_key}
        with self._lock:
            self._requests.append(entry)
        return entry

    def _record_status(self, entry: dict, status: int) -> None:
        with self._lock:
            entry['status'] = status

    def _in_outage(self) -> bool:
        with self._lock:
            return time.monotonic() < self._outage_until

    def _authorized(self, authorization: Optional[str]) -> bool:
        expected = f'Bearer {self._api_key}'.encode()
        return hmac.compare_digest((authorization or '').encode(), expected)

    def _rate_headers(self, remaining: Optional[int]) -> dict:
        with self._lock:
            limit = self._settings['rate_limit']
            if remaining is None:
                remaining = self._window.remaining(limit, time.monotonic())
        return {'x-ratelimit-limit': limit_header(limit),
                'x-ratelimit-remaining': str(remaining)}

    def _admit(self) -> Admission:
        with self._lock:
            settings = self._settings
            accepted, remaining = self._window.admit(settings['rate_limit'], time.monotonic())
            if not accepted:
                return Admission(False, remaining)
            low, high = settings['latency']
            latency_draw, before_draw, after_draw = (self._random.random() for _ in range(3))
            return Admission(
                True, remaining, latency=low + (high - low) * latency_draw,
                fault_before=pick_fault(before_draw, [
                    ('fail_before', settings['fail_before']),
                    ('drop_before', settings['drop_before'])]),
                fault_after=pick_fault(after_draw, [
                    ('fail_after', settings['fail_after']),
                    ('drop_after', settings['drop_after']),
                    ('slow_after', settings['slow_after'])]),
                slow_seconds=settings['slow_seconds'])

    def _pause(self, seconds: float) -> None:
        # Cut short by stop(), so a stopping sandbox does not wait on sleepers.
        if seconds > 0:
            self._stopping.wait(seconds)

    def _process(self, method: str, path: str, call: ApiCall) -> tuple[int, Any]:
        with self._lock:
            return route(self._account, method, path, call)


class _SandboxServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its sandbox and its open connections."""

    # The default backlog of 5 drops simultaneous connects, and the client's
    # SYN retry then adds a second of delay to a burst.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: LoopsSandbox):
        self.sandbox = sandbox
        self._connections: set = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _SandboxHandler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Ends the kept-alive connections, so that a stopped sandbox answers nothing."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout, a test ending) is routine here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _SandboxHandler(BaseHTTPRequestHandler):
    """One connection: routes /api requests through auth, rate limit, latency,
    faults and the account; /_sandbox/ requests to the inspection endpoints."""

    protocol_version = 'HTTP/1.1'
    # Headers and body go out in two writes; with Nagle's algorithm the body
    # then waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server: _SandboxServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the default access log goes to stderr on every request."""

    def send_error(self, code: int, message: Optional[str] = None,
                   explain: Optional[str] = None) -> None:
        """Malformed requests and unknown methods get the JSON envelope too."""
        self.close_connection = True
        self._respond(code, {'success': False,
                             'message': message or HTTPStatus(code).phrase})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except ApiError as error:
            body, body_error = b'', error
        else:
            body_error = None
        if url.path.startswith(SANDBOX_PREFIX):
            self._inspect(url.path, body_error or body)
        elif url.path == API_PREFIX or url.path.startswith(API_PREFIX + '/'):
            call = ApiCall(parse_qs(url.query, keep_blank_values=True), body,
                           self.headers.get(IDEMPOTENCY_HEADER))
            self._serve_api(url.path[len(API_PREFIX):], call, body_error)
        else:
            self._respond(404, {'success': False, 'message': 'Not found'})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve_api(self, path: str, call: ApiCall, body_error: Optional[ApiError]) -> None:
        sandbox = self.server.sandbox
        entry = sandbox._log_request(self.command, path, call.idempotency_key)
        if sandbox._in_outage():
            return self._drop()
        if not sandbox._authorized(self.headers.get('Authorization')):
            return self._answer(entry, 401, {'success': False, 'message': 'Invalid API key'})
        admission = sandbox._admit()
        if not admission.accepted:
            return self._answer(entry, 429, {'success': False, 'message': 'Rate limit exceeded'},
                                admission.remaining)
        sandbox._pause(admission.latency)
        faulty = path.startswith('/v1/')
        if faulty and admission.fault_before == 'fail_before':
            return self._answer(entry, 500, SERVER_ERROR, admission.remaining)
        if faulty and admission.fault_before == 'drop_before':
            return self._drop()
        if body_error is not None:
            status, payload = body_error.status, {'success': False, 'message': body_error.message}
        else:
            status, payload = self._process(path, call)
        fault_after = admission.fault_after if faulty else None
        if fault_after == 'drop_after':
            return self._drop()
        if fault_after == 'fail_after':
            status, payload = 500, SERVER_ERROR
        elif fault_after == 'slow_after':
            sandbox._pause(admission.slow_seconds)
        self._answer(entry, status, payload, admission.remaining)

    def _process(self, path: str, call: ApiCall) -> tuple[int, Any]:
        try:
            return self.server.sandbox._process(self.command, path, call)
        except Exception:  # a sandbox bug: answer like a server would, keep the trace
            traceback.print_exc()
            return 500, SERVER_ERROR

    def _inspect(self, path: str, body: Any) -> None:
        sandbox = self.server.sandbox
        endpoints = {'/_sandbox/state': 'GET', '/_sandbox/config': 'POST',
                     '/_sandbox/reset': 'POST'}
        if path not in endpoints:
            return self._respond(404, {'success': False, 'message': 'Not found'})
        if self.command != endpoints[path]:
            return self._respond(405, {'success': False, 'message': 'Method not allowed'})
        if path == '/_sandbox/state':
            return self._respond(200, sandbox.state())
        if path == '/_sandbox/reset':
            sandbox.reset()
            return self._respond(200, {'success': True})
        try:
            if isinstance(body, ApiError):
                raise body
            sandbox.configure(**parse_json_object(body))
        except ApiError as error:
            return self._respond(error.status, {'success': False, 'message': error.message})
        except ValueError as error:
            return self._respond(400, {'success': False, 'message': str(error)})
        self._respond(200, {'success': True})

    def _read_body(self) -> bytes:
        """The request body; ApiError (and a closed connection) when it can't be used."""
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            self.close_connection = True
            raise ApiError(411, 'A Content-Length is required.')
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise ApiError(400, 'Invalid Content-Length.')
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            left = length if length <= MAX_DRAINED_BYTES else 0
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            raise ApiError(413, 'Payload too large')
        return self.rfile.read(length)

    def _drop(self) -> None:
        # Nothing is written: the client sees the connection close unanswered.
        self.close_connection = True

    def _answer(self, entry: dict, status: int, payload: Any,
                remaining: Optional[int] = None) -> None:
        self.server.sandbox._record_status(entry, status)
        self._respond(status, payload, remaining)

    def _respond(self, status: int, payload: Any, remaining: Optional[int] = None) -> None:
        data = json.dumps(payload).encode('utf-8')
        try:
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            for name, value in self.server.sandbox._rate_headers(remaining).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header('Connection', 'close')
            self.end_headers()
            self.wfile.write(data)
        except ConnectionError:
            self.close_connection = True  # the client gave up (e.g. timed out)


# ------------------------------------------------------------------------ CLI

def parse_latency_ms(text: str) -> tuple[float, float]:
    """'100-300' or '100' (milliseconds) -> (low, high) seconds."""
    low, _, high = text.partition('-')
    try:
        bounds = (float(low) / 1000, float(high or low) / 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected MS or LOW-HIGH, got {text!r}') from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f'expected 0 <= LOW <= HIGH, got {text!r}')
    return bounds


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='segment-loops sandbox',
        description='Serve a local Loops-compatible API until SIGINT/SIGTERM. The API '
                    'key is $LOOPS_API_KEY, or a generated one that is printed.')
    parser.add_argument('--port', type=int, default=8787)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--rate_limit', type=float, default=10.0,
                        help='requests per second per team; 0 turns limiting off')
    parser.add_argument('--latency_ms', type=parse_latency_ms, default=(0.0, 0.0),
                        help='added latency per request: MS or LOW-HIGH')
    parser.add_argument('--team_name', default='Sandbox team')
    parser.add_argument('--seed', type=int, default=None)
    for name in SHARE_SETTINGS:
        parser.add_argument(f'--{name}', type=float, default=0.0,
                            help='share of requests (0..1) with this fault')
    parser.add_argument('--slow_seconds', type=float, default=DEFAULT_SETTINGS['slow_seconds'])
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    """The `segment-loops sandbox` command: argv -> exit status (0 after SIGINT/SIGTERM)."""
    args = _argument_parser().parse_args(argv)
    api_key = os.environ.get('LOOPS_API_KEY')
    generated = not api_key
    if generated:
        api_key = secrets.token_urlsafe(24)
    faults = {name: getattr(args, name) for name in SHARE_SETTINGS + ('slow_seconds',)}
    try:
        sandbox = LoopsSandbox(api_key, team_name=args.team_name, host=args.host,
                               port=args.port, rate_limit=args.rate_limit,
                               latency=args.latency_ms, seed=args.seed, **faults)
        sandbox.start()
    except (ValueError, OSError) as error:
        print(f'segment-loops sandbox: {error}', file=sys.stderr)
        return 2
    stop_requested = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop_requested.set())
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f'Loops sandbox serving at {sandbox.base_url}', flush=True)
        if generated:
            print(f'Generated API key (a local test credential): {api_key}', flush=True)
        stop_requested.wait()
    finally:
        sandbox.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
    print('Loops sandbox stopped', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
