"""A sample user and what their calls carry: profiles, later traits, and the
payloads of track, page and group calls, in the forms real senders use.

Each function draws from the run's `random.Random` in a fixed order, so a
seed gives the same archive every time.
"""
import random
from dataclasses import dataclass
from typing import Optional

from pipeline.local.clock import iso_ms

# (display name, ASCII form for email addresses)
FIRST_NAMES = (
    ('Ada', 'ada'), ('José', 'jose'), ('Zoë', 'zoe'), ('Łukasz', 'lukasz'),
    ('Mei', 'mei'), ('Olu', 'olu'), ('Priya', 'priya'), ('Sven', 'sven'),
    ('Fatima', 'fatima'), ('Noah', 'noah'), ('Ana', 'ana'), ('Kenji', 'kenji'),
)
LAST_NAMES = (
    ('Lovelace', 'lovelace'), ('García', 'garcia'), ('Müller', 'muller'),
    ('Kowalski', 'kowalski'), ('Chen', 'chen'), ('Adeyemi', 'adeyemi'),
    ('Sharma', 'sharma'), ('Olsen', 'olsen'), ('Haddad', 'haddad'),
    ("O'Brien", 'obrien'), ('Silva', 'silva'), ('Tanaka', 'tanaka'),
)
PLANS = ('free', 'pro', 'business')
CITIES = (('Berlin', 'DE'), ('São Paulo', 'BR'), ('Austin', 'US'), ('Pune', 'IN'))
PAGES = (('Home', '/'), ('Pricing', '/pricing'), ('Docs', '/docs/getting-started'),
         ('Blog', '/blog/segment-to-loops'))
LONG_BIO = ('Runs the growth team and writes about lifecycle email. ' * 12).strip()


@dataclass(slots=True)
class User:
    """One sample user: who they are and how far their history has got."""
    index: int
    user_id: object                 # str, or an int for the numeric-userId senders
    anonymous_id: str
    first_name: str
    last_name: str
    email: str
    channel: str
    group_id: str
    signed_up_ms: int
    plan: str = 'free'
    events: int = 0
    identifies: int = 0             # identifies that carried the userId
    tracks: int = 0
    upgraded_from: Optional[str] = None   # a plan change not yet tracked


def anonymous_traits(user: User) -> dict:
    """A newsletter form filled in before sign-up: an email, no userId yet."""
    return {'email': user.email, 'newsletter': True,
            'mailingLists': {'list_news': True}}


def names(user: User) -> dict:
    """The user's name traits, in one of the spellings senders use."""
    style = user.index % 6
    if style == 2:
        return {'first_name': user.first_name, 'last_name': user.last_name}
    result = {'firstName': user.first_name, 'lastName': user.last_name}
    if style == 4:
        result.update(first_name=user.first_name, last_name=user.last_name)
    return result


def identify_traits(rng: random.Random, user: User) -> dict:
    """The traits of the user's next identify with a userId: the whole profile
    first, then small changes (logins, a plan upgrade, a new name...)."""
    number = user.identifies
    user.identifies += 1
    if number == 0:
        return profile_traits(rng, user)
    traits: dict = {'logins': number + 1}
    if rng.random() < 0.5:
        traits['email'] = user.email
    if (number == 1 and user.index % 2 == 0) or (number == 3 and user.index % 4 == 0):
        _upgrade(user, traits)
    if number == 2 and user.index % 3 == 0:
        # A double-barrelled name after a marriage: always a change.
        user.last_name = f'{user.last_name}-{LAST_NAMES[user.index % len(LAST_NAMES)][0]}'
        traits.update(names(user))
        traits['name'] = f'{user.first_name} {user.last_name}'
    if number == 3:
        traits['phone'] = None
    if number == 1 and user.index % 4 == 1:
        traits['mailingLists'] = {'list_product': 'false'}
    return traits


def _upgrade(user: User, traits: dict) -> None:
    position = PLANS.index(user.plan)
    if position + 1 < len(PLANS):
        user.upgraded_from = user.plan
        user.plan = PLANS[position + 1]
        traits['plan'] = user.plan


def profile_traits(rng: random.Random, user: User) -> dict:
    """The first identify with a userId: the whole profile, in the user's own mess."""
    index = user.index
    traits: dict = {'email': user.email, **names(user),
                    'name': f'{user.first_name} {user.last_name}',
                    'plan': user.plan, 'logins': 1,
                    'createdAt': iso_ms(user.signed_up_ms),
                    'phone': f'+49 30 {rng.randrange(1_000_000, 9_999_999)}'}
    if index % 3 != 2:
        city, country = CITIES[index % len(CITIES)]
        traits['address'] = {'street': f'{rng.randrange(1, 200)} Main St', 'city': city,
                             'postalCode': f'{rng.randrange(10000, 99999)}',
                             'country': country}
        traits['company'] = {'name': f'Acme {index % 7}', 'id': user.group_id,
                             'industry': 'Software', 'employee_count': rng.randrange(2, 900)}
    if index % 2 == 0:
        traits['tags'] = ['beta', 'newsletter']
    if index % 3 == 1:
        traits['teams'] = [{'id': 'team_1', 'role': 'admin'}, {'id': 'team_2', 'role': None}]
    if index % 4 == 1:
        traits.update({'Invited User?': True, '$browser': 'Firefox',
                       'utm.source': 'newsletter', 'Lieblingsfarbe 🎨': 'grün',
                       '紹介者': 'テスト'})
    if index % 4 == 3:
        traits.update(seats='12', age='34')
    if index % 8 == 5:
        traits['bio'] = LONG_BIO
    traits.update(_profile_lists(index))
    subscribed = index % 9
    if subscribed < 3:
        traits['subscribed'] = (True, False, 'yes')[subscribed]
    return traits


def _profile_lists(index: int) -> dict:
    # The three shapes of mailingLists senders use, and none at all.
    lists = index % 4
    if lists == 0:
        return {'mailingLists': {'list_news': True}}
    if lists == 1:
        return {'mailingLists': {'list_news': 'true', 'list_product': 'false'}}
    if lists == 2:
        return {'mailingLists': [{'listId': 'list_news', 'subscribed': True},
                                 {'listId': 'list_product', 'subscribed': False}]}
    return {}


def track_payload(rng: random.Random, user: User, count: int) -> tuple[str, dict]:
    """(event name, properties) of the user's next track call; `count` numbers
    the call in the run (every third carries the email in its properties)."""
    user.tracks += 1
    if user.tracks == 1:
        name, properties = 'Signed Up', {'plan': user.plan, 'method': 'email'}
    elif user.upgraded_from is not None:
        name = 'Plan Upgraded'
        properties = {'from': user.upgraded_from, 'to': user.plan, 'Seats?': 5}
        user.upgraded_from = None
    elif rng.random() < 0.5:
        total = rng.randrange(900, 30_000) / 100
        name = 'Order Completed'
        properties = {'orderId': f'ord_{rng.getrandbits(40):010x}', 'total': total,
                      'revenue': f'{total:.2f}', 'currency': 'USD', 'coupon': None,
                      'products': [{'product_id': 'sku_42', 'price': total,
                                    'quantity': 1, 'categories': ['plans', 'annual']}]}
    else:
        name = 'Viewed Pricing'
        properties = {'path': '/pricing', 'variant': rng.choice('AB'),
                      '$value': 0, 'Compared Plans?': ['pro', 'business']}
    if count % 3 == 0:
        properties['email'] = user.email
    return name, properties


def page_payload(rng: random.Random) -> dict:
    """The fields of a page call: a name, a category or null, the page's properties."""
    name, path = rng.choice(PAGES)
    return {'name': name, 'category': None if rng.random() < 0.5 else 'Marketing',
            'properties': {'path': path, 'url': f'https://acme.example{path}',
                           'title': f'{name} | Acme', 'referrer': 'https://www.google.com/',
                           'search': '' if rng.random() < 0.7 else '?utm_source=loops'}}


def group_payload(rng: random.Random, user: User) -> dict:
    """The fields of a group call: the user's company and its traits."""
    return {'groupId': user.group_id,
            'traits': {'name': f'Acme Customer {user.group_id}', 'industry': 'Software',
                       'employees': rng.randrange(2, 5000), 'plan': user.plan,
                       'website url': f'https://{user.group_id}.example.com'}}
