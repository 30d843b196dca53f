"""Sample Segment calls, built one at a time in receivedAt order.

`EventFactory` turns "this user's next call, received then" into a whole
Segment event: its kind, its payload (pipeline/local/traits.py) and the
envelope around it, with the odd forms real archives hold (messageIds that
are not UUIDs, numeric userIds, every timestamp form, old `version`s, odd
`integrations`...).
"""
import random
import uuid
from typing import Optional

from pipeline.local.clock import iso_ms, odd_timestamp
from pipeline.local.traits import (FIRST_NAMES, LAST_NAMES, User, anonymous_traits, group_payload,
                                   identify_traits, page_payload, track_payload)
from transforms.segment.timestamps import DAY_MS

CHANNELS = ('server', 'browser', 'mobile', 'client')
LIBRARIES = {
    'server': {'name': 'analytics-python', 'version': '2.3.2'},
    'browser': {'name': 'analytics.js', 'version': 'next-1.70.0'},
    'mobile': {'name': 'analytics-ios', 'version': '4.1.8'},
    'client': {'name': 'acme-custom-sender', 'version': '0.3'},
}
USER_AGENT = ('Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 '
              '(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36')

# The ways Segment senders spell `timestamp` besides `...sssZ`, applied in
# turn to one event in TIMESTAMP_ODD_EVERY so most events keep usable times.
TIMESTAMP_ODD_FORMS = ('+00:00', '+0530', 'no zone', 'year only', 'unpadded month',
                       'epoch ms', 'null', 'missing')
TIMESTAMP_ODD_EVERY = 5


def uuid4_text(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng` (uuid.uuid4 would not follow the seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def hex8(rng: random.Random) -> str:
    """Eight hex digits drawn from `rng`."""
    return f'{rng.getrandbits(32):08x}'


def context_of(user: User, context_traits: Optional[dict]) -> dict:
    """The `context` a call of the user's channel carries (library, device...)."""
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


class EventFactory:
    """Builds the events of a run, one call at a time, in receivedAt order.

    `count` numbers the events of the run; the odd forms cycle on it so each
    appears at a steady rate whatever the size, while user-level forms cycle
    on the user's index.
    """

    def __init__(self, rng: random.Random, start_ms: int, first_count: int = 0):
        self.rng = rng
        self.start_ms = start_ms
        self.count = first_count

    def new_user(self, index: int) -> User:
        """User number `index`: names, email (every 50th malformed), userId
        (every 10th numeric), channel, and a sign-up up to 400 days back."""
        rng = self.rng
        first, first_ascii = rng.choice(FIRST_NAMES)
        last, last_ascii = rng.choice(LAST_NAMES)
        email = f'{first_ascii}.{last_ascii}{index}@example.com'
        if index % 50 == 7:
            email = f'{first_ascii}.{last_ascii}{index}.example.com'
        user_id = 100_000 + index if index % 10 == 3 else f'usr_{index:06d}'
        return User(index=index, user_id=user_id, anonymous_id=uuid4_text(rng),
                    first_name=first, last_name=last, email=email,
                    channel=CHANNELS[index % len(CHANNELS)],
                    group_id=f'grp_{index % 7:03d}',
                    signed_up_ms=self.start_ms - rng.randrange(DAY_MS, 400 * DAY_MS))

    def event(self, user: User, received_ms: int) -> dict:
        """The user's next event, received at `received_ms`: an identify first
        (anonymous for every 5th user) and every third call, else a random kind."""
        rng = self.rng
        ordinal = user.events
        user.events += 1
        anonymous_first = user.index % 5 == 0
        if ordinal == 0 and anonymous_first:
            return self.envelope(user, received_ms, 'identify', anonymous=True,
                                 traits=anonymous_traits(user))
        if ordinal == 0 or ordinal % 3 == 0 or (ordinal == 1 and anonymous_first):
            kind = 'identify'
        else:
            roll = rng.random()
            kind = ('track' if roll < 0.45 else 'page' if roll < 0.75
                    else 'group' if roll < 0.85 else 'identify')
        if kind == 'identify':
            return self.envelope(user, received_ms, 'identify',
                                 traits=identify_traits(rng, user))
        if kind == 'track':
            name, properties = track_payload(rng, user, self.count)
            return self.envelope(user, received_ms, 'track', event=name,
                                 properties=properties, context_traits={'email': user.email})
        if kind == 'page':
            return self.envelope(user, received_ms, 'page', **page_payload(rng))
        return self.envelope(user, received_ms, 'group', **group_payload(rng, user))

    def envelope(self, user: User, received_ms: int, kind: str, *,
                 anonymous: bool = False, context_traits: Optional[dict] = None,
                 **payload) -> dict:
        """The call of `kind` with its own `payload` and the common fields around it."""
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
                event['timestamp'] = odd_timestamp(form, event_ms)
        else:
            event['timestamp'] = event_time
        event['originalTimestamp'] = event_time
        event['sentAt'] = iso_ms(sent_ms)
        event['receivedAt'] = iso_ms(received_ms)
        event['context'] = context_of(user, context_traits)
        if count % 6 == 0:
            event['integrations'] = {'All': True, 'Mixpanel': False,
                                     'Google Analytics': {'clientId': f'{user.index}.{count}'}}
        event['channel'] = user.channel
        event['version'] = '1.1' if count % 7 == 3 else 2
        if count % 13 == 0:
            event['projectId'] = 'proj_acme'
            event['_metadata'] = {'bundled': ['Segment.io'], 'unbundled': []}
        return event

    def _message_id(self, count: int, received_ms: int) -> str:
        form = count % 11
        if form == 7:
            return f'ajs-next-{received_ms}-{uuid4_text(self.rng)}'
        if form == 8:
            return f'personas_{self.rng.getrandbits(120):030x}'
        if form == 9:
            # Per archive (its start), as a real backfill job's rows would be:
            # the same row number in two archives is not the same event.
            return f'backfill job {self.start_ms // 1000} / row {count}'
        return uuid4_text(self.rng)
