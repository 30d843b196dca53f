"""What the account needs before a run: the contact properties to create
(`check --create_properties`), and the event properties its event patterns
do not list.

Segment gives no names or types of custom properties ("Ensure that the keys
and values you provide match the schema you've created"), and Loops wants
each created before use. `creation_plan` takes check's properties section:
a property the account lacks is created with the one Loops type all its
values have (string, number, boolean, date: ISO date-time text); one seen
with values of several types, or only nulls, is reported, not guessed; a
name that is not camelCase (Loops' API names) is reported with the hint to
rename it in the mapping. A property the account has is left alone, and
one whose values its type cannot hold is reported. `create_properties`
makes the calls (POST /v1/contacts/properties); a property Loops says
exists counts as existing, so a second run creates nothing.

Event patterns: Loops keeps, per event name, the event properties it knows
(`GET /v1/event-patterns`). `EventShapes` notes the properties of each event
a run sends; `event_patterns_section` names those the account's pattern
does not list, and the events it has no pattern of yet.
"""
import collections
from typing import Optional

from pipeline.check_report import CAMEL_CASE, MISSING, TYPE_CONFLICT, value_type
from transforms.core.records import LoopsRequest
from transforms.loops.connection import LoopsConnection
from transforms.loops.retry import AuthError, LoopsError
from transforms.loops.workflows import (PROPERTY_TYPES, PropertyExists, WorkflowsUnavailable,
                                        create_property, read_event_patterns)

CREATED, EXISTING, REFUSED = 'created', 'existing', 'refused'


def creation_plan(properties: dict) -> dict:
    """check's `properties` section -> {'create': {name: type}, 'not_created':
    {name: reason}, 'type_conflicts': {name: reason}}."""
    create, not_created, conflicts = {}, {}, {}
    for key, item in properties.items():
        if item['status'] == TYPE_CONFLICT:
            conflicts[key] = (f'a {item["account_type"]} in Loops; {item["type_conflicts"]:,} '
                              f'values cannot be one (e.g. {item["conflict_example"]!r}): '
                              'left as it is')
        if item['status'] != MISSING:
            continue
        types = {kind: n for kind, n in item['value_types'].items() if kind != 'null'}
        if not CAMEL_CASE.fullmatch(key):
            not_created[key] = ('not a camelCase name, as Loops\' API names are: rename it '
                                'in the mapping')
        elif not types:
            not_created[key] = 'only null values: no type to give it'
        elif len(types) > 1:
            seen = ', '.join(f'{kind} {n:,}' for kind, n in sorted(types.items()))
            not_created[key] = (f'values of several types ({seen}): create it by hand with '
                                'the type you mean, or make the mapping send one')
        elif next(iter(types)) not in PROPERTY_TYPES:
            not_created[key] = f'values of type {next(iter(types))}, which Loops has not'
        else:
            create[key] = next(iter(types))
    return {'create': create, 'not_created': not_created, 'type_conflicts': conflicts}


def create_properties(connection: LoopsConnection, plan: dict) -> dict:
    """Creates the plan's properties -> {name: CREATED, EXISTING or REFUSED:
    Loops' words}. Raises AuthError."""
    results = {}
    client = connection.client()
    try:
        for name, property_type in plan['create'].items():
            try:
                create_property(client, name, property_type)
                results[name] = CREATED
            except PropertyExists:
                results[name] = EXISTING
            except AuthError:
                raise
            except LoopsError as error:
                results[name] = f'{REFUSED}: {error.loops_says or error}'
    finally:
        client.close()
    return results


def plan_lines(plan: dict) -> list:
    """The properties about to be created, before any is."""
    if not plan['create']:
        return ['No contact property to create.']
    return ([f'Creating {len(plan["create"])} contact properties in Loops:']
            + [f'  {name} ({kind})' for name, kind in plan['create'].items()])


def result_lines(plan: dict, results: dict) -> list:
    """What creating did, and what it left for a person to decide."""
    lines = [f'  {name}: {result}' for name, result in results.items()]
    if plan['not_created']:
        lines.append('Not created:')
        lines += [f'  {name}: {reason}' for name, reason in plan['not_created'].items()]
    if plan['type_conflicts']:
        lines.append('Type conflicts (not changed):')
        lines += [f'  {name}: {reason}' for name, reason in plan['type_conflicts'].items()]
    return lines


# ------------------------------------------------------------------ event patterns

class EventShapes:
    """The event sends of a run: event name -> property name -> count."""

    def __init__(self):
        self.events = collections.Counter()
        self.properties: dict[str, collections.Counter] = {}

    def add(self, request: LoopsRequest) -> None:
        name = request.body.get('eventName')
        if request.spec.mergeable or not isinstance(name, str):
            return
        self.events[name] += 1
        held = self.properties.setdefault(name, collections.Counter())
        properties = request.body.get('eventProperties')
        if isinstance(properties, dict):
            held.update(key for key, value in properties.items()
                        if value_type(value) != 'null')


def event_patterns_section(connection: LoopsConnection, shapes: EventShapes) -> dict:
    """{readable, message, events: {name: {count, pattern, unlisted: {property:
    count}}}} for the events the run sends; only events with something to say."""
    if not shapes.events:
        return {'readable': True, 'message': None, 'events': {}}
    client = connection.client()
    try:
        patterns = read_event_patterns(client)
    except WorkflowsUnavailable as error:
        return {'readable': False, 'message': str(error), 'events': {}}
    finally:
        client.close()
    events = {}
    for name, count in sorted(shapes.events.items()):
        pattern = patterns.get(name)
        listed = {prop for prop, _ in pattern.properties} if pattern is not None else set()
        unlisted = {prop: n for prop, n in sorted(shapes.properties[name].items())
                    if prop not in listed}
        if pattern is None or unlisted:
            events[name] = {'count': count, 'pattern': pattern is not None,
                            'unlisted': unlisted}
    return {'readable': True, 'message': None, 'events': events}


def format_event_patterns(section: dict) -> list:
    if not section['readable']:
        return ['', f'Event patterns: cannot tell ({section["message"]})']
    if not section['events']:
        return []
    lines = ['', 'Event properties the account\'s event patterns do not list']
    for name, item in section['events'].items():
        if not item['pattern']:
            lines.append(f'  {name!r} ({item["count"]:,} events): no pattern in the account yet '
                         '(Loops makes one from the first event it gets)')
        else:
            lines.append(f'  {name!r} ({item["count"]:,} events): '
                         + ', '.join(f'{prop} ({n:,})' for prop, n in item['unlisted'].items()))
    return lines


def created_section(plan: Optional[dict], results: Optional[dict]) -> Optional[dict]:
    """The report's `created_properties` object (None without --create_properties)."""
    if plan is None:
        return None
    return {'planned': plan['create'], 'results': results or {},
            'not_created': plan['not_created'], 'type_conflicts': plan['type_conflicts']}
