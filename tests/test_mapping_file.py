"""The mapping language (transforms/mapping/language.py): documents, paths,
templates, defaults and the errors a person sees."""
import dataclasses
import json
import pickle
import textwrap

import pytest
import yaml

import transforms.mapping.language
from transforms.mapping.language import (MappingError, Path, compile_path, compile_template,
                                         default_mapping, load_mapping, mapping_from_dict)

DEFAULT = default_mapping()
PAGES = mapping_from_dict({'page': {'eventName': 'Viewed {name} Page'}})


# --- the mapping document

def test_default_mapping_is_picklable_and_equal_to_an_empty_document():
    assert pickle.loads(pickle.dumps(DEFAULT)) == DEFAULT == mapping_from_dict({})
    assert pickle.loads(pickle.dumps(PAGES)) == PAGES


def test_the_documented_example_is_a_valid_mapping():
    doc = transforms.mapping.language.__doc__
    block = doc[doc.index('    contact:'):doc.index('A source is')]
    mapping = mapping_from_dict(yaml.safe_load(textwrap.dedent(block)))
    assert mapping.contact.rename == {'plan_name': 'plan'} and 'password' in mapping.contact.skip
    assert [route.name for route in mapping.routes] == [
        'contact', 'event', "rules[0] 'Signed Up updates the contact'"]


@pytest.mark.parametrize('text, keys', [
    ('$', ()),
    ('$.traits.email', ('traits', 'email')),
    ('$.traits["Invited User?"]', ('traits', 'Invited User?')),
    ("$.traits['a.b'].c", ('traits', 'a.b', 'c')),
    ('$["say \\"hi\\""]', ('say "hi"',)),
    ('$.context.traits.$email', ('context', 'traits', '$email')),
])
def test_compile_path(text, keys):
    assert compile_path(text) == Path(text, keys)


@pytest.mark.parametrize('text, parts', [
    ('Signed Up', ('Signed Up',)),
    ('Viewed {name} Page', ('Viewed ', ('name',), ' Page')),
    ('{ properties.title }', ('', ('properties', 'title'), '')),
    ('{a}{b["x y"]}', ('', ('a',), '', ('b', 'x y'), '')),
])
def test_compile_template(text, parts):
    template = compile_template(text)
    assert template.text == text
    assert tuple(part if isinstance(part, str) else part.keys
                 for part in template.parts) == parts


@pytest.mark.parametrize('document, message', [
    ([], 'a mapping is an object with the sections contact, event, page, screen, group, rules '
     'and values, not a list'),
    ({'contacts': {}},
     'contacts: unknown section (expected one of contact, event, page, screen, group, rules, '
     'values)'),
    ({'contact': []}, 'contact: expected an object, got a list'),
    ({'contact': {'nickname': '$.x'}}, 'contact.nickname: unknown key'),
    ({'contact': {'email': 'traits.email'}},
     "contact.email: 'traits.email' is not a path (paths start with '$.')"),
    ({'contact': {'email': ['$.traits.email', 'email']}},
     "contact.email[1]: 'email' is not a path"),
    ({'contact': {'email': '$.traits..email'}}, "contact.email: '$.traits..email' is not a valid"),
    ({'contact': {'email': '$.traits[email]'}}, 'contact.email: '),
    ({'contact': {'email': []}}, 'contact.email: an empty list'),
    ({'contact': {'email': 5}}, 'contact.email: expected a path'),
    ({'contact': {'source': {'literal': None}}}, 'contact.source: a literal is'),
    ({'contact': {'source': {'literal': 'x', 'extra': 1}}}, 'contact.source: expected a path'),
    ({'contact': {'userId': '$.userId'}}, 'contact.userId: userId is not mappable'),
    ({'event': {'userId': '$.userId'}}, 'event.userId: userId is not mappable'),
    ({'page': {'eventName': 'x', 'userId': '$.userId'}}, 'page.userId: userId is not mappable'),
    ({'contact': {'properties': ['$.traits']}}, 'contact.properties: expected a path'),
    ({'contact': {'skip': 'password'}}, 'contact.skip: expected a list'),
    ({'contact': {'dates': [1]}}, 'contact.dates: expected a list'),
    ({'contact': {'rename': ['a']}}, 'contact.rename: expected an object'),
    ({'contact': {'rename': {'a': 'email'}}}, "contact.rename.a: 'email' is a Loops field"),
    ({'contact': {'rename': {'a': 'updatedAt'}}}, "contact.rename.a: 'updatedAt'"),
    ({'event': {'eventName': None}}, 'event.eventName: required'),
    ({'event': {'eventName': []}}, 'event.eventName: an empty list'),
    ({'event': {'eventName': 'Viewed {} Page'}}, "event.eventName: 'Viewed {} Page': an empty"),
    ({'event': {'eventName': 'Viewed {name Page'}}, 'event.eventName: ' "'Viewed {name Page': "
     'unbalanced braces'),
    ({'event': {'eventName': ['$.event', 'A {x..y}']}}, 'event.eventName[1]: '),
    ({'event': {'contactProperties': {'eventName': '$.x'}}},
     "event.contactProperties.eventName: 'eventName' is a field of the event request"),
    ({'event': {'contactProperties': {'plan': None}}}, 'event.contactProperties.plan: required'),
    ({'event': {'contactProperties': 'context.traits'}},
     "event.contactProperties: 'context.traits' is not a path"),
    ({'event': {'contactProperties': 5}}, 'event.contactProperties: expected an object'),
    ({'event': {'colon_replacement': ':'}}, 'event.colon_replacement: expected null or text'),
    ({'event': {'colon_replacement': 1}}, 'event.colon_replacement: expected null or text'),
    ({'page': {}}, 'page.eventName: required'),
    ({'page': 'Viewed {name}'}, 'page: expected an object, got text'),
    ({'screen': {'eventName': 'x', 'colon': '-'}}, 'screen.colon: unknown key'),
    ({'group': {'eventName': 'x', 'colon_replacement': 'a:b'}},
     'group.colon_replacement: expected null or text'),
    ({'values': {'arrays': 'split'}}, "values.arrays: expected one of join, json, drop, got 'split'"),
    ({'values': {'long_strings': 'ignore'}}, 'values.long_strings: expected one of'),
    ({'values': {'separator': 1}}, 'values.separator: expected null (camelCase) or text'),
    ({'event': {'contactProperties': {'optInStatus': '$.x'}}},
     "event.contactProperties.optInStatus: 'optInStatus' is read-only in Loops"),
    ({'values': {'depth': 3}}, 'values.depth: unknown key'),
])
def test_invalid_mappings_say_what_and_where(document, message):
    with pytest.raises(MappingError) as raised:
        mapping_from_dict(document)
    assert str(raised.value).startswith(message)


def test_flattened_names_are_camel_case_unless_a_separator_is_given():
    assert DEFAULT.values.separator is None
    assert mapping_from_dict({'values': {'separator': '_'}}).values.separator == '_'
    assert mapping_from_dict({'values': {'separator': None}}).values.separator is None


def test_load_yaml_merges_over_the_defaults(tmp_path):
    path = tmp_path / 'mapping.yaml'
    path.write_text(textwrap.dedent('''\
        contact:
          firstName: $.traits.given_name
          skip: [password]
        page:
          eventName: "Viewed {name} Page"
        values: {arrays: json}
        '''))
    mapping = load_mapping(str(path))
    contact = mapping.contact
    assert contact.contact_fields['firstName'] == (compile_path('$.traits.given_name'),)
    assert contact.contact_fields['lastName'] == DEFAULT.contact.contact_fields['lastName']
    assert contact.skip == {'password'} and 'given_name' in contact.consumed_keys
    assert (mapping.values.arrays, mapping.values.nested_objects) == ('json', 'flatten')
    # Every route shares the document's value rules.
    assert contact.values == mapping.events['track'].values == mapping.values
    assert mapping.events['track'] == dataclasses.replace(DEFAULT.events['track'],
                                                          values=mapping.values)
    assert [route.trigger for route in mapping.routes] == [
        'type = "identify"', 'type = "track"', 'type = "page"']
    # A turned-on section takes the event defaults for the keys it does not give.
    assert mapping.events['page'].email == DEFAULT.events['track'].email


def test_load_json_and_empty_yaml(tmp_path):
    json_path = tmp_path / 'mapping.json'
    json_path.write_text(json.dumps({'event': {'eventName': '$.properties.name'}}))
    assert load_mapping(str(json_path)).events['track'].event_name == (
        compile_path('$.properties.name'),)
    empty = tmp_path / 'empty.yml'
    empty.write_text('')
    assert load_mapping(str(empty)) == DEFAULT
    commented_out = tmp_path / 'sections.yaml'
    commented_out.write_text('contact:\n  # email: $.traits.mail\nevent:\npage:\n')
    assert load_mapping(str(commented_out)) == DEFAULT


@pytest.mark.parametrize('name, text, message', [
    ('bad.yaml', 'contact: [unclosed', 'not valid YAML'),
    ('bad.json', '{"contact": ', 'not valid JSON'),
    ('mapping.toml', '', 'a mapping file is YAML (.yaml, .yml) or JSON (.json)'),
    ('wrong.yaml', 'contact: {email: traits.email}', "contact.email: 'traits.email' is not a path"),
    ('missing.yaml', None, 'cannot read the mapping file'),
])
def test_load_mapping_errors_name_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(MappingError) as raised:
        load_mapping(str(path))
    assert str(raised.value).startswith(f'{path}: ') and message in str(raised.value)
