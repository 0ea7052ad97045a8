"""Non-finite numbers and values nested too deeply are refused with ``ValidationError`` wherever values are cleaned
or bulk-written, as aiida refuses them: stored, ``NaN``/``Infinity`` is not JSON, and every attribute filter on the
node type then fails with ``malformed JSON``. Nothing is written when a value is refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from sqlitedos import QueryBuilder
from sqlitedos.db import JSON_MAX_DEPTH
from sqlitedos.exceptions import ValidationError
from tests.test_archive_import import full_dump

NON_FINITE = {
    'float-nan': float('nan'),
    'float-inf': float('inf'),
    'float-minus-inf': float('-inf'),
    'decimal-nan': Decimal('nan'),
    'decimal-snan': Decimal('sNaN'),
    'decimal-inf': Decimal('Infinity'),
    'decimal-minus-inf': Decimal('-Infinity'),
    'nested-decimal-nan': {'a': [1, {'b': Decimal('NaN')}]},
}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


TOO_DEEP = {'just-too-deep': nested(JSON_MAX_DEPTH + 1), 'far-too-deep': nested(100_000)}
REFUSED = {**NON_FINITE, **TOO_DEEP}


def attribute_filter_works(storage: Any) -> None:
    qb = QueryBuilder(backend=storage).append(
        entity_type='data.core.int.Int.', orm_base='node', filters={'attributes.value': {'>': 0}}
    )
    assert qb.count() >= 1


@pytest.fixture
def base(storage: Any) -> tuple[Any, Any]:
    """A stored Int node with a positive value (so an attribute filter has something to find), and its user."""
    user = storage.default_user if storage.default_user is not None else storage.users.create('u@x.org').store()
    node = storage.nodes.create(node_type='data.core.int.Int.', user=user, label='base')
    node.set_attribute('value', 5)
    node.store()
    return node, user


@pytest.mark.parametrize('name', sorted(REFUSED))
def test_refused_on_store_of_a_new_node(storage: Any, base: tuple[Any, Any], name: str) -> None:
    _, user = base
    before = full_dump(storage.get_session())
    node = storage.nodes.create(node_type='data.core.int.Int.', user=user, label='bad')
    node.set_attribute('value', REFUSED[name])
    with pytest.raises(ValidationError):
        node.store()
    assert not node.is_stored
    assert full_dump(storage.get_session()) == before
    attribute_filter_works(storage)


@pytest.mark.parametrize('name', sorted(REFUSED))
def test_refused_on_a_stored_entity(storage: Any, base: tuple[Any, Any], name: str) -> None:
    node, user = base
    group = storage.groups.create(label='g', user=user).store()
    computer = storage.computers.create(label='c', hostname='h', transport_type='t', scheduler_type='s').store()
    before = full_dump(storage.get_session())
    setters = [
        lambda: node.set_extra('bad', REFUSED[name]),
        lambda: group.set_extra('bad', REFUSED[name]),
        lambda: computer.set_metadata({'bad': REFUSED[name]}),
    ]
    for setter in setters:
        with pytest.raises(ValidationError):
            setter()
    assert 'bad' not in node.extras and 'bad' not in group.extras
    assert full_dump(storage.get_session()) == before
    attribute_filter_works(storage)


@pytest.mark.parametrize('name', sorted(NON_FINITE))
def test_refused_by_bulk_insert(storage: Any, base: tuple[Any, Any], name: str) -> None:
    _, user = base
    before = full_dump(storage.get_session())
    row = {'node_type': 'data.core.int.Int.', 'user_id': user.pk, 'attributes': {'value': NON_FINITE[name]}}
    with pytest.raises(ValidationError):
        storage.bulk_insert('node', [row], allow_defaults=True)
    assert full_dump(storage.get_session()) == before
    attribute_filter_works(storage)


def test_deepest_allowed_value_round_trips(storage: Any, base: tuple[Any, Any]) -> None:
    _, user = base
    node = storage.nodes.create(node_type='data.core.int.Int.', user=user, label='deep')
    node.set_attribute('deep', nested(JSON_MAX_DEPTH - 1))  # the attributes dict is one more level
    node.store()
    assert storage.nodes.get(node.pk).get_attribute('deep') == nested(JSON_MAX_DEPTH - 1)
    attribute_filter_works(storage)
