"""The floor: a backfill's work done the plain, obvious way, in one Python loop.

What a data engineer would write by hand to turn a Segment archive into Loops
requests, with none of this project's code: read each gzip file, json.loads
each line, keep identify and track calls, merge each contact's traits into a
dict (the latest value of each property by event time), collect the events
(once per messageId), then json.dumps every request. It makes the values
Loops accepts as a careful person would: nested objects flattened to
camelCase names, arrays joined, strings cut at 500 characters, dates as
ISO-8601, no null event property nor an integer Loops would round in one, an
invalid email left out of a call that has a userId, and never
`subscribed: true`; an event with a userId goes without its email, which
rides beside it as the email to use only if Loops has no such contact.
bench/processing.py checks that it writes the same requests as the backfill.

    .venv/bin/python bench/straightforward_loop.py --input 'archive/segment-logs/*/*/*' \
        --output out/straightforward
"""
import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import time
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
RESERVED = {'id', 'listId', 'softDeleteAt', 'teamId', 'updatedAt'}
OWN_FIELDS = {'email', 'firstName', 'lastName', 'userGroup', 'source', 'subscribed', 'userId',
              'mailingLists', 'optInStatus'}
READ_BY_FIELDS = {'email', 'firstName', 'first_name', 'lastName', 'last_name', 'userGroup',
                  'user_group', 'source', 'subscribed', 'mailingLists'}
DATES = {'createdAt', 'birthday'}
YES = {True: True, False: False, 1: True, 0: False, 'true': True, 'false': False,
       'yes': True, 'no': False, '1': True, '0': False}
EMAIL = re.compile(r'[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+')
WORD_BREAKS = re.compile(r'[\W_]+')
SAFE_INTEGER = 2 ** 53 - 1
SHORT_DATE = re.compile(r'(\d{4})(?:-(\d{1,2})-(\d{1,2}))?')
MAX_BYTES = 32 * 1024


def millis(value):
    """A Segment time (ISO text in its odd forms, or epoch s/ms) -> epoch ms."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return round(value * 1000 if abs(value) < 1e11 else value)
    if not isinstance(value, str):
        return None
    try:
        if not value.isdigit():
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            return (moment - EPOCH) // timedelta(milliseconds=1)
    except ValueError:
        pass
    match = SHORT_DATE.fullmatch(value.strip())
    if match:
        try:
            day = datetime(int(match[1]), int(match[2] or 1), int(match[3] or 1),
                           tzinfo=timezone.utc)
        except ValueError:
            return None
        return (day - EPOCH) // timedelta(milliseconds=1)
    if re.fullmatch(r'[+-]?\d+(\.\d+)?', value.strip()):
        return millis(float(value) if '.' in value else int(value))
    return None


def iso(value):
    ms = millis(value)
    if ms is None:
        return None
    return (EPOCH + timedelta(milliseconds=ms)).strftime('%Y-%m-%dT%H:%M:%S.') + \
        f'{ms % 1000:03d}Z'


def camel_case(parent, key):
    """address, city -> addressCity: the words of both, capitalized after the first."""
    words = [w for w in WORD_BREAKS.split(parent) if w]
    key_words = [w for w in WORD_BREAKS.split(key) if w]
    name = ''.join(words[:1] + [w[0].upper() + w[1:] for w in words[1:] + key_words])
    return name if key_words else name + key


def flat(props, prefix='', event=False):
    """Nested objects flattened to camelCase names, arrays joined, long
    strings cut; for an event's properties, no null and no unsafe integer."""
    out = {}
    for key, value in props.items():
        name = camel_case(prefix, key) if prefix else key
        if len(name) > 500 or not name.strip():
            continue
        if value is None and event:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and event \
                and abs(value) > SAFE_INTEGER:
            value = str(value)
        if isinstance(value, dict):
            if value:
                out.update(flat(value, name, event))
        elif isinstance(value, list):
            items = [v if isinstance(v, str) else json.dumps(v, separators=(',', ':'),
                                                             ensure_ascii=False)
                     for v in value]
            if items:
                out[name] = ', '.join(items)[:500]
        elif isinstance(value, str):
            out[name] = value[:500]
        elif isinstance(value, float) and value != value:
            continue
        else:
            out[name] = value
    return out


def first(*values):
    return next((v for v in values if v is not None), None)


def email_of(user_id, *values):
    """The first present email; an invalid one is left out of a call with a
    userId, and fails a call without one."""
    value = first(*(v for v in values if not (isinstance(v, str) and not v.strip())))
    if value is None:
        return None
    value = value.strip() if isinstance(value, str) else value
    if not isinstance(value, str) or not EMAIL.fullmatch(value) or len(value) > 500:
        if user_id:
            return None
        raise ValueError('invalid email')
    return value


def user_id_of(event):
    value = event.get('userId')
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > 500:
        raise ValueError('userId too long')
    return value.strip()


def text_of(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    return value[:500] if isinstance(value, str) else value


def identify_body(event, user_id):
    """The contact properties one identify sets."""
    traits = event.get('traits') if isinstance(event.get('traits'), dict) else {}
    email = email_of(user_id, traits.get('email'), event.get('email'))
    props = flat({k: v for k, v in traits.items()
                  if k not in READ_BY_FIELDS and k not in RESERVED and k not in OWN_FIELDS})
    for name in [n for n in props if n in RESERVED or n in OWN_FIELDS]:
        del props[name]
    for name in DATES & props.keys():
        if props[name] is not None:
            props[name] = iso(props[name])
            if props[name] is None:
                del props[name]
    for field, keys in (('firstName', ('firstName', 'first_name')),
                        ('lastName', ('lastName', 'last_name')),
                        ('userGroup', ('userGroup', 'user_group')), ('source', ('source',))):
        value = first(*(traits.get(k) for k in keys))
        value = 'Segment' if value is None and field == 'source' else value
        if value is not None and not isinstance(value, (dict, list)):
            props[field] = text_of(value)
    flag = traits.get('subscribed')
    if isinstance(flag, str):
        flag = flag.strip().lower()
    if flag is not None and not isinstance(flag, (dict, list)) and flag in YES:
        props['subscribed'] = YES[flag]
    lists = traits.get('mailingLists')
    entries = lists.items() if isinstance(lists, dict) else [
        (e.get('listId'), e.get('subscribed')) for e in lists if isinstance(e, dict)] \
        if isinstance(lists, list) else []
    for list_id, on in entries:
        on = on.strip().lower() if isinstance(on, str) else on
        if isinstance(list_id, str) and list_id and not isinstance(on, (dict, list)) and on in YES:
            props[('mailingLists', list_id)] = YES[on]
    if user_id:
        props['userId'] = user_id
    if email:
        props['email'] = email
    elif not user_id:
        raise ValueError('no identity')
    return props


def track_body(event, user_id):
    name = event.get('event')
    properties = event.get('properties') if isinstance(event.get('properties'), dict) else {}
    if not isinstance(name, str) or not name.strip() or ':' in name or len(name) > 500:
        raise ValueError('bad event name')
    context = event.get('context') if isinstance(event.get('context'), dict) else {}
    traits = context.get('traits') if isinstance(context.get('traits'), dict) else {}
    email = email_of(user_id, properties.get('email'), traits.get('email'))
    if not user_id and not email:
        raise ValueError('no identity')
    body = {'eventName': name}
    fallback_email = None
    if user_id:
        body['userId'] = user_id
        fallback_email = email   # sent only if Loops has no contact of that userId
    elif email:
        body['email'] = email
    event_properties = flat(properties, event=True)
    if event_properties:
        body['eventProperties'] = event_properties
    return body, fallback_email


def run(pattern, output):
    contacts = {}   # contact -> {property: ((event ms, received ms, messageId), value)}
    events = {}     # contact -> {(stamp, key): body}
    lines = 0
    for path in sorted(p for p in glob.glob(pattern) if p.endswith('.gz')):
        with gzip.open(path, 'rb') as f:
            for line in f:
                lines += 1
                if len(line) > MAX_BYTES and len(line.rstrip(b'\r\n')) > MAX_BYTES:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict) or event.get('type') not in ('identify', 'track'):
                    continue
                message_id = '' if event.get('messageId') is None else str(event['messageId'])
                received = millis(event.get('receivedAt'))
                when = first(millis(event.get('timestamp')), millis(event.get('originalTimestamp')),
                             millis(event.get('sentAt')), received)
                stamp = (when or 0, received or 0, message_id)
                try:
                    user_id = user_id_of(event)
                    if event['type'] == 'identify':
                        props = identify_body(event, user_id)
                        key = user_id and 'user:' + user_id or 'email:' + props['email'].lower()
                        merged = contacts.setdefault(key, {})
                        for name, value in props.items():
                            if name not in merged or (stamp, repr(value)) > (
                                    merged[name][0], repr(merged[name][1])):
                                merged[name] = (stamp, value)
                    else:
                        body, fallback_email = track_body(event, user_id)
                        key = user_id and 'user:' + user_id or 'email:' + body['email'].lower()
                        idempotency = 'segment-' + hashlib.sha256(
                            message_id.encode('utf-8', 'surrogatepass')).hexdigest()
                        events.setdefault(key, {})[(stamp, idempotency)] = (body, fallback_email)
                except (ValueError, TypeError):
                    continue
    merge_leads(contacts)
    return write(output, contacts, events), lines


def merge_leads(contacts):
    """An email-only contact whose email is the latest email of one userId
    contact is that contact."""
    owners = {}
    for key, props in contacts.items():
        if key.startswith('user:') and 'email' in props:
            owners.setdefault(props['email'][1].lower(), []).append(key)
    for key in [k for k in contacts if k.startswith('email:')]:
        owner = owners.get(key[len('email:'):], [])
        if len(owner) == 1:
            for name, (stamp, value) in contacts.pop(key).items():
                merged = contacts[owner[0]]
                if name not in merged or (stamp, repr(value)) > (merged[name][0],
                                                                  repr(merged[name][1])):
                    merged[name] = (stamp, value)


def write(output, contacts, events):
    os.makedirs(output, exist_ok=True)
    written = 0
    with open(os.path.join(output, 'requests.jsonl'), 'w', encoding='utf-8') as out:
        for props in contacts.values():
            body = {name: value for name, (_, value) in props.items() if type(name) is str}
            lists = {name[1]: value for name, (_, value) in props.items() if type(name) is tuple}
            if lists:
                body['mailingLists'] = lists
            if body.get('subscribed') is True:
                del body['subscribed']       # would re-subscribe people who opted out
            out.write(json.dumps({'method': 'PUT', 'path': '/v1/contacts/update',
                                  'headers': {'Content-Type': 'application/json'},
                                  'body': body}, sort_keys=True, ensure_ascii=False) + '\n')
            written += 1
        for by_key in events.values():
            for (_, key), (body, fallback_email) in sorted(by_key.items()):
                request = {'method': 'POST', 'path': '/v1/events/send',
                           'headers': {'Content-Type': 'application/json',
                                       'Idempotency-Key': key},
                           'body': body}
                if fallback_email:
                    request['fallback_email'] = fallback_email
                out.write(json.dumps(request, sort_keys=True, ensure_ascii=False) + '\n')
                written += 1
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', required=True, help='a glob of the archive files')
    parser.add_argument('--output', required=True, help='a directory to write into')
    args = parser.parse_args(argv)
    started = time.monotonic()
    written, lines = run(args.input, args.output)
    print(f'{lines} lines -> {written} requests in {time.monotonic() - started:.2f}s')


if __name__ == '__main__':
    main()
