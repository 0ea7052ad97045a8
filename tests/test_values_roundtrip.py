"""Hypothesis round-trips of attribute and extra values: what is read back is what aiida would read back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlitedos.entities import clean_value
from sqlitedos.exceptions import ValidationError

INT64 = 2**63
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-INT64, max_value=INT64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
keys = st.text(min_size=1).filter(lambda key: '.' not in key)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
top_level = st.dictionaries(keys, values, max_size=5)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def aiida_reads_back(value: Any) -> Any:
    """Reference model of aiida's cleaning (``clean_value``) followed by a JSON round trip, written independently."""
    if isinstance(value, dict):
        return {key: aiida_reads_back(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [aiida_reads_back(item) for item in value]
    if isinstance(value, float):
        text = format(value, '.14g')
        return int(float(text)) if 'e' in text and float(text).is_integer() else float(text)
    return value


def same(left: Any, right: Any) -> bool:
    """Equal, with bool and int told apart (``True == 1`` in Python, not in JSON)."""
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


@SETTINGS
@given(attributes=top_level, extras=top_level)
def test_store_and_read_back(storage: Any, attributes: dict[str, Any], extras: dict[str, Any]) -> None:
    node = storage.nodes.create(node_type='data.core.dict.Dict.', user=storage.default_user)
    node.set_attribute_many(attributes)
    node.set_extra_many(extras)
    node.store()
    loaded = storage.nodes.get(node.pk)
    assert same(loaded.attributes, aiida_reads_back(attributes))
    assert same(loaded.extras, aiida_reads_back(extras))
    assert same(node.attributes, loaded.attributes) and same(node.extras, loaded.extras)


@SETTINGS
@given(value=values)
def test_set_on_stored_entities(storage: Any, value: Any) -> None:
    node = storage.nodes.create(node_type='data.Data.', user=storage.default_user).store()
    node.set_attribute('key', value)
    node.set_extra('ключ', value)
    group = storage.groups.create(label=f'g{node.pk}', user=storage.default_user).store()
    group.set_extra('k', value)
    expected = aiida_reads_back(value)
    assert same(storage.nodes.get(node.pk).get_attribute('key'), expected)
    assert same(storage.nodes.get(node.pk).get_extra('ключ'), expected)
    assert same(storage.groups.get(group.pk).get_extra('k'), expected)


@given(value=values)
def test_clean_value_matches_reference(value: Any) -> None:
    assert same(clean_value(value), aiida_reads_back(value))


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        (1e20, 10**20),
        (1.5e-7, 1.5e-07),
        (0.1 + 0.2, 0.3),
        (1e14, 10**14),
        (1e13, 10000000000000.0),
        (b'ab', [97, 98]),
        ((1, 2), [1, 2]),
        ({'a': {1, 2}}, {'a': [1, 2]}),
        (2**64, 2**64),
        (True, True),
    ],
)
def test_clean_value_cases(value: Any, expected: Any) -> None:
    assert same(clean_value(value), expected)


@pytest.mark.parametrize('value', [float('nan'), float('inf'), object(), {'a': [object()]}, [1, {'b': float('-inf')}]])
def test_clean_value_refuses(value: Any) -> None:
    with pytest.raises(ValidationError):
        clean_value(value)
