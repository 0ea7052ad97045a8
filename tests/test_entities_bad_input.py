"""Bad input raises a clear exception from ``sqlitedos.exceptions`` and leaves the storage content unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sqlitedos import LinkType, SqliteDosStorage
from sqlitedos.exceptions import (
    AiidaException,
    ClosedStorage,
    IntegrityError,
    InvalidOperation,
    NotExistent,
    ValidationError,
)


def dump(storage: Any) -> list[str]:
    """The whole database as SQL text (without the planner statistics ``PRAGMA optimize`` may write on close)."""
    return [line for line in storage.get_session().iterdump() if 'sqlite_stat' not in line and 'ANALYZE' not in line]


def populate(storage: Any) -> dict[str, Any]:
    user = storage.default_user
    data = storage.nodes.create(node_type='data.core.int.Int.', user=user, attributes={'value': 1}).store()
    calc = storage.nodes.create(node_type='process.calculation.CalculationNode.', user=user).store()
    calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    gone = storage.nodes.create(node_type='data.core.int.Int.', user=user).store()
    storage.nodes.delete(gone.pk)
    group = storage.groups.create(label='g', user=user).store()
    group.add_nodes([data])
    return {'user': user, 'data': data, 'calc': calc, 'gone': gone, 'group': group}


def node_row(storage: Any) -> dict[str, Any]:
    return {
        'uuid': 'x',
        'node_type': '',
        'process_type': None,
        'label': '',
        'description': '',
        'ctime': None,
        'mtime': None,
        'attributes': {},
        'extras': {},
        'repository_metadata': {},
        'dbcomputer_id': None,
        'user_id': storage.default_user.pk,
    }


BAD_WRITES: dict[str, tuple[type[Exception], Callable[[Any, dict[str, Any]], Any]]] = {
    'bulk-insert-unknown-key': (IntegrityError, lambda s, e: s.bulk_insert('node', [{**node_row(s), 'colour': 'red'}])),
    'bulk-insert-unknown-key-with-defaults': (
        IntegrityError,
        lambda s, e: s.bulk_insert('user', [{'email': 'a@b', 'age': 3}], allow_defaults=True),
    ),
    'bulk-update-unknown-key': (IntegrityError, lambda s, e: s.bulk_update('node', [{'id': e['data'].pk, 'x': 1}])),
    'duplicate-node-uuid': (
        IntegrityError,
        lambda s, e: s.nodes.create(node_type='data.Data.', user=e['user'], uuid=e['data'].uuid).store(),
    ),
    'duplicate-email': (IntegrityError, lambda s, e: s.users.create(email=e['user'].email).store()),
    'duplicate-email-bulk': (
        IntegrityError,
        lambda s, e: s.bulk_insert('user', [{'email': 'n@n'}, {'email': 'n@n'}], allow_defaults=True),
    ),
    'link-wrong-kinds': (IntegrityError, lambda s, e: e['data'].add_incoming(e['calc'], LinkType.INPUT_CALC, 'y')),
    'link-duplicate-label': (IntegrityError, lambda s, e: e['calc'].add_incoming(e['data'], LinkType.INPUT_CALC, 'x')),
    'link-cycle': (IntegrityError, lambda s, e: e['data'].add_incoming(e['calc'], LinkType.CREATE, 'out')),
    'link-from-deleted-node': (NotExistent, lambda s, e: e['calc'].add_incoming(e['gone'], LinkType.INPUT_CALC, 'z')),
    'group-add-deleted-node': (NotExistent, lambda s, e: e['group'].add_nodes([e['gone']])),
    'comment-on-deleted-node': (
        IntegrityError,
        lambda s, e: s.comments.create(node=e['gone'], user=e['user'], content='c').store(),
    ),
    'update-deleted-node': (NotExistent, lambda s, e: setattr(e['gone'], 'label', 'new')),
    'attribute-not-json': (ValidationError, lambda s, e: e['data'].set_attribute('bad', object())),
    'attribute-nan': (ValidationError, lambda s, e: e['data'].set_attribute('bad', float('nan'))),
    'extra-not-json-nested': (ValidationError, lambda s, e: e['group'].set_extra('bad', {'a': [{1, object()}]})),
    'store-with-bad-attribute': (
        ValidationError,
        lambda s, e: s.nodes.create(node_type='data.Data.', user=e['user'], attributes={'a': object()}).store(),
    ),
    'store-unclean-bad-attribute': (
        ValidationError,
        lambda s, e: s.nodes.create(node_type='data.Data.', user=e['user'], attributes={'a': {1j}}).store(clean=False),
    ),
    'bad-attribute-key': (ValidationError, lambda s, e: e['data'].set_attribute('a.b', 1)),
    'delete-missing-node': (NotExistent, lambda s, e: s.nodes.delete(e['gone'].pk)),
    'delete-node-with-links': (IntegrityError, lambda s, e: s.nodes.delete(e['data'].pk)),
    'delete-user-with-nodes': (IntegrityError, lambda s, e: s.users.delete(e['user'].pk)),
}


@pytest.mark.parametrize('case', sorted(BAD_WRITES))
def test_bad_write_changes_nothing(storage: Any, case: str) -> None:
    error, write = BAD_WRITES[case]
    entities = populate(storage)
    before = dump(storage)
    attributes, extras = dict(entities['data'].attributes), dict(entities['group'].extras)
    with pytest.raises(error) as info:
        write(storage, entities)
    assert isinstance(info.value, AiidaException)
    assert str(info.value)
    assert dump(storage) == before
    assert entities['data'].attributes == attributes and entities['group'].extras == extras


def test_foreign_entities(dos_storage: Any, temp_storage: Any) -> None:
    entities = populate(dos_storage)
    foreign = populate(temp_storage)
    before = dump(dos_storage)
    with pytest.raises(InvalidOperation, match='another storage'):
        entities['group'].add_nodes([foreign['data']])
    with pytest.raises(InvalidOperation, match='another storage'):
        dos_storage.nodes.create(node_type='data.Data.', user=foreign['user'])
    with pytest.raises(InvalidOperation, match='another storage'):
        dos_storage.comments.create(node=foreign['data'], user=entities['user'])
    with pytest.raises(IntegrityError, match='same backend'):
        entities['calc'].add_incoming(foreign['data'], LinkType.INPUT_CALC, 'f')
    assert dump(dos_storage) == before


def test_unstored_entities_where_stored_are_needed(storage: Any) -> None:
    entities = populate(storage)
    before = dump(storage)
    unstored_user = storage.users.create(email='u@u')
    with pytest.raises(InvalidOperation, match='not stored'):
        storage.nodes.create(node_type='data.Data.', user=unstored_user)
    unstored_computer = storage.computers.create(label='c')
    with pytest.raises(InvalidOperation, match='not stored'):
        storage.authinfos.create(computer=unstored_computer, user=entities['user'])
    with pytest.raises(NotExistent):
        storage.groups.create(label='u', user=entities['user']).add_nodes([entities['data']])
    assert dump(storage) == before


def test_writes_to_a_closed_storage(dos_storage: Any) -> None:
    entities = populate(dos_storage)
    before = dump(dos_storage)
    dos_storage.close()
    writes = [
        lambda: dos_storage.nodes.create(node_type='data.Data.', user=entities['user']).store(),
        lambda: entities['data'].set_extra('k', 1),
        lambda: entities['calc'].add_incoming(entities['data'], LinkType.INPUT_CALC, 'y'),
        lambda: entities['group'].add_nodes([entities['calc']]),
        lambda: dos_storage.bulk_insert('user', [{'email': 'x@y'}], allow_defaults=True),
        lambda: dos_storage.users.create(email='c@c').store(),
        lambda: dos_storage.nodes.all(),
    ]
    for write in writes:
        with pytest.raises(ClosedStorage):
            write()
    reopened = SqliteDosStorage(dos_storage.profile)
    try:
        assert dump(reopened) == before
    finally:
        reopened.close()


def test_closed_temp_storage(temp_storage: Any) -> None:
    entities = populate(temp_storage)
    temp_storage.close()
    with pytest.raises(ClosedStorage):
        entities['data'].set_attribute('k', 1)
    with pytest.raises(ClosedStorage):
        temp_storage.nodes.create(node_type='data.Data.', user=entities['user']).store()
