"""Segment's own Mapping Kit test cases, run against the Python port.

The cases are data, transcribed from segmentio/action-destinations (see each
file's "about" and each case's "source"): tests/data/segment/mapping_kit_*.json.
"""
import json
from pathlib import Path

import pytest

from transforms.core.javascript import UNDEFINED
from transforms.mapping.mapping_kit import (MappingKitError, prepare_mapping, transform,
                                            transform_batch, transform_validated, validate_mapping)
from transforms.mapping.mapping_kit.keys import field_value_keys
from transforms.mapping.mapping_kit.paths import flatten_object, get_path, render_template

DATA = Path(__file__).parent / "data" / "segment"


def cases(name: str) -> list:
    document = json.loads((DATA / name).read_text(encoding="utf-8"))
    return [pytest.param(case, id=f"{index}:{case['source'].split(':', 1)[1]}")
            for index, case in enumerate(document["cases"])]


def same(actual, expected) -> bool:
    """Equal as JSON: True is not 1, and a leaked UNDEFINED cannot be encoded."""
    return json.dumps(actual, sort_keys=True) == json.dumps(expected, sort_keys=True)


def check_transform(case: dict) -> None:
    arguments = (case["mapping"], case["payload"]) if "payload" in case else (case["mapping"],)
    if "error" in case:
        with pytest.raises(MappingKitError) as raised:
            transform(*arguments)
        assert case["error"] in str(raised.value)
    else:
        actual = transform(*arguments)
        assert same(actual, case["expected"]), actual


@pytest.mark.parametrize("case", cases("mapping_kit_index.json") + cases("mapping_kit_readme.json"))
def test_transform(case):
    check_transform(case)


@pytest.mark.parametrize("case", cases("mapping_kit_liquid.json"))
def test_liquid(case):
    if "expected_contains" in case:
        keys = field_value_keys(case["value"])
        assert set(case["expected_contains"]) <= set(keys), keys
    else:
        check_transform(case)


@pytest.mark.parametrize("case", cases("mapping_kit_validate.json"))
def test_validate(case):
    if case.get("valid"):
        validate_mapping(case["mapping"])
        return
    with pytest.raises(MappingKitError) as raised:
        validate_mapping(case["mapping"])
    if "error" in case:
        assert case["error"] in str(raised.value)
    else:
        issues = [str(issue) for issue in raised.value.errors]
        assert issues and set(issues) <= set(case["errors_among"]), issues


@pytest.mark.parametrize("case", cases("mapping_kit_flatten.json"))
def test_flatten(case):
    actual = flatten_object(case["value"], case["prefix"], case["separator"], case["omit_arrays"])
    assert same(actual, case["expected"]), actual


@pytest.mark.parametrize("case", cases("mapping_kit_placeholders.json"))
def test_placeholders(case):
    if "error" in case:
        with pytest.raises(TypeError, match=case["error"]):
            render_template(case["template"], case["data"])
    else:
        assert render_template(case["template"], case["data"]) == case["expected"]


@pytest.mark.parametrize("case", cases("mapping_kit_value_keys.json"))
def test_value_keys(case):
    assert field_value_keys(case["value"]) == case["expected"]


@pytest.mark.parametrize("case", cases("mapping_kit_get.json"))
def test_get(case):
    actual = get_path(case["data"], case.get("path", UNDEFINED))
    if case.get("expected_undefined"):
        assert actual is UNDEFINED
    else:
        assert same(actual, case["expected"]), actual


def test_batch_validates_once_and_maps_each_payload():
    mapping = {"email": {"@path": "$.traits.email"}, "plan": {"@if": {"exists": {"@path": "$.traits.plan"},
                                                                     "then": {"@path": "$.traits.plan"},
                                                                     "else": "free"}}}
    payloads = [{"traits": {"email": "a@example.com", "plan": "pro"}}, {"traits": {}}]
    assert transform_batch(mapping, payloads) == [{"email": "a@example.com", "plan": "pro"}, {"plan": "free"}]


@pytest.mark.parametrize("case", cases("mapping_kit_index.json") + cases("mapping_kit_readme.json"))
def test_a_prepared_mapping_gives_what_transform_gives(case):
    payload = {} if case.get("payload") is None else case["payload"]
    if "error" in case:
        with pytest.raises(MappingKitError) as raised:
            transform_validated(prepare_mapping(case["mapping"]), payload)
        assert case["error"] in str(raised.value)
    else:
        actual = transform_validated(prepare_mapping(case["mapping"]), payload)
        assert same(actual, case["expected"]), actual


def test_a_prepared_mapping_is_validated_once_not_on_each_call():
    # A directive mixed with a raw key: validation refuses it, resolution copies it as a raw object.
    mapping = {"email": {"@path": "$.traits.email", "note": 1}}
    with pytest.raises(MappingKitError, match="should only have one @-prefixed key"):
        prepare_mapping(mapping)
    assert transform_validated(mapping, {}) == mapping
    prepared = prepare_mapping({"email": {"@path": "$.traits.email"}})
    payloads = [{"traits": {"email": email}} for email in ("a@x.io", "b@x.io")]
    assert [transform_validated(prepared, payload) for payload in payloads] == [{"email": "a@x.io"},
                                                                               {"email": "b@x.io"}]


def test_every_validation_issue_is_reported_at_its_location():
    mapping = {"email": {"@if": {"exists": {"@path": "$.a"}, "then": {"@oops": 1}}},
               "name": {"@template": 1}}
    with pytest.raises(MappingKitError) as raised:
        validate_mapping(mapping)
    assert [(issue.location, issue.message) for issue in raised.value.errors] == [
        ("/email/@if/then", "has an invalid directive: @oops."),
        ("/name/@template", "should be a string or a mapping directive but it is a number.")]


def test_a_directive_failing_on_a_payload_names_its_location():
    with pytest.raises(MappingKitError) as raised:
        transform({"fields": [{"@case": {"operator": "title", "value": {"@path": "$.a"}}}]}, {"a": "x"})
    assert [str(issue) for issue in raised.value.errors] == [
        '/fields/0/@case operator key should have a value of "lower" or "upper"']


def test_missing_values_never_reach_the_output():
    mapping = {"ids": [{"@path": "$.missing"}, {"@path": "$.id"}],
               "merged": {"@merge": {"direction": "right", "objects": [{"a": 1}, {"a": {"@path": "$.missing"}}]}},
               "top": {"@path": "$.missing"}}
    assert transform(mapping, {"id": 7}) == {"ids": [None, 7], "merged": {}}
    assert transform({"@path": "$.missing"}, {}) is None
