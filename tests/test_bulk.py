"""``bulk_insert`` and ``bulk_update`` (SPEC 4.4)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest

from sqlitedos import EntityTypes
from sqlitedos.db import new_uuid
from sqlitedos.exceptions import IntegrityError

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)


def node_row(storage: Any, **overrides: Any) -> dict[str, Any]:
    row = {
        'uuid': new_uuid(),
        'node_type': 'data.core.int.Int.',
        'process_type': None,
        'label': 'l',
        'description': '',
        'ctime': NOW,
        'mtime': NOW,
        'attributes': {'value': 1},
        'extras': {},
        'repository_metadata': {},
        'dbcomputer_id': None,
        'user_id': storage.default_user.pk,
    }
    row.update(overrides)
    return row


def test_insert_returns_ids_in_order(storage: Any) -> None:
    rows = [node_row(storage, label=f'n{i}', attributes={'value': i}) for i in range(50)]
    pks = storage.bulk_insert(EntityTypes.NODE, rows)
    assert len(pks) == 50 and pks == sorted(pks)
    for pk, row in zip(pks, rows):
        node = storage.nodes.get(pk)
        assert node.label == row['label'] and node.attributes == row['attributes'] and node.uuid == row['uuid']
        assert node.ctime == NOW
    raw = storage.get_session().execute('SELECT ctime, attributes FROM db_dbnode WHERE id = ?', (pks[1],)).fetchone()
    assert raw == ('2024-05-06 07:08:09.123456', '{"value": 1}')


def test_insert_empty(storage: Any) -> None:
    assert storage.bulk_insert('node', []) == []


def test_insert_every_entity_type(storage: Any) -> None:
    user = storage.default_user.pk
    (computer,) = storage.bulk_insert('computer', [{'label': 'c'}], allow_defaults=True)
    storage.bulk_insert('authinfo', [{'aiidauser_id': user, 'dbcomputer_id': computer}], allow_defaults=True)
    (group,) = storage.bulk_insert('group', [{'label': 'g', 'user_id': user}], allow_defaults=True)
    a, b = storage.bulk_insert(
        'node',
        [
            {'user_id': user, 'node_type': 'data.Data.'},
            {'user_id': user, 'node_type': 'process.calculation.CalculationNode.'},
        ],
        allow_defaults=True,
    )
    storage.bulk_insert('comment', [{'dbnode_id': a, 'user_id': user}], allow_defaults=True)
    storage.bulk_insert('log', [{'dbnode_id': a, 'loggername': 'x', 'levelname': 'INFO'}], allow_defaults=True)
    storage.bulk_insert('link', [{'input_id': a, 'output_id': b, 'label': 'x', 'type': 'input_calc'}])
    storage.bulk_insert('group_node', [{'dbgroup_id': group, 'dbnode_id': a}])
    storage.bulk_insert('user', [{'email': 'x@y'}], allow_defaults=True)
    info = storage.get_info()['entities']
    assert {key: value['count'] for key, value in info.items()} == {
        'Users': 2,
        'Computers': 1,
        'Nodes': 2,
        'Groups': 1,
        'Comments': 1,
        'Logs': 1,
        'Links': 1,
    }
    authinfo = storage.authinfos.all()[0]
    assert authinfo.enabled is True and authinfo.get_auth_params() == {}
    node = storage.nodes.get(a)
    assert node.label == '' and node.process_type is None and node.attributes == {} and len(node.uuid) == 36
    assert storage.groups.get(group).nodes == [node] and storage.groups.get(group).time is not None
    assert storage.computers.get(computer).get_metadata() == {}


@pytest.mark.parametrize(
    'change', [{'id': 5}, {'unknown': 1}, 'drop-label'], ids=['with-id', 'unknown-key', 'missing-key']
)
def test_insert_wrong_keys(storage: Any, change: Any) -> None:
    row = node_row(storage)
    if change == 'drop-label':
        del row['label']
    else:
        row.update(change)
    before = storage.nodes.count()
    with pytest.raises(IntegrityError, match='Incorrect fields given for db_dbnode'):
        storage.bulk_insert('node', [node_row(storage), row])
    assert storage.nodes.count() == before
    if change != 'drop-label':
        with pytest.raises(IntegrityError):
            storage.bulk_insert('node', [row], allow_defaults=True)


def test_insert_required_without_default(storage: Any) -> None:
    with pytest.raises(IntegrityError, match="'user_id' is required"):
        storage.bulk_insert('node', [{'node_type': 'data.Data.'}], allow_defaults=True)


def test_insert_inside_transaction_rolls_back(storage: Any) -> None:
    with pytest.raises(RuntimeError), storage.transaction():
        storage.bulk_insert('node', [node_row(storage)])
        raise RuntimeError
    assert storage.nodes.count() == 0


def test_insert_duplicate_uuid(storage: Any) -> None:
    row = node_row(storage)
    with pytest.raises(IntegrityError, match='UNIQUE'):
        storage.bulk_insert('node', [row, dict(row)])
    assert storage.nodes.count() == 0


def test_ids_continue_after_existing_rows(storage: Any) -> None:
    first = storage.nodes.create(node_type='data.Data.', user=storage.default_user).store()
    pks = storage.bulk_insert('node', [node_row(storage), node_row(storage)])
    assert pks == [first.pk + 1, first.pk + 2]


def test_update(storage: Any) -> None:
    pks = storage.bulk_insert('node', [node_row(storage), node_row(storage)])
    storage.bulk_update('node', [{'id': pks[0], 'label': 'a', 'extras': {'e': 1}}, {'id': pks[1], 'label': 'b'}])
    first, second = storage.nodes.get(pks[0]), storage.nodes.get(pks[1])
    assert (first.label, first.extras, second.label) == ('a', {'e': 1}, 'b')
    assert first.mtime > NOW and second.mtime > NOW and first.ctime == NOW
    storage.bulk_update('node', [{'id': pks[0], 'mtime': NOW}])
    assert storage.nodes.get(pks[0]).mtime == NOW
    storage.bulk_update('node', [])


def test_update_wrong_keys(storage: Any) -> None:
    (pk,) = storage.bulk_insert('node', [node_row(storage)])
    with pytest.raises(IntegrityError, match='Incorrect fields'):
        storage.bulk_update('node', [{'label': 'no id'}])
    with pytest.raises(IntegrityError, match='Incorrect fields'):
        storage.bulk_update('node', [{'id': pk, 'label': 'x'}, {'id': pk, 'nope': 1}])
    assert storage.nodes.get(pk).label == 'l'


def test_update_other_entities(storage: Any) -> None:
    (pk,) = storage.bulk_insert('user', [{'email': 'a@b'}], allow_defaults=True)
    storage.bulk_update(EntityTypes.USER, [{'id': pk, 'first_name': 'A'}])
    assert storage.users.get(pk).first_name == 'A'


def test_unknown_entity_type(storage: Any) -> None:
    with pytest.raises(ValueError):
        storage.bulk_insert('nodes', [{}])


def test_insert_is_one_executemany(storage: Any) -> None:
    statements: list[str] = []
    rows = [node_row(storage) for _ in range(5)]
    connection: sqlite3.Connection = storage.get_session()
    connection.set_trace_callback(statements.append)
    try:
        storage.bulk_insert('node', rows)
    finally:
        connection.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith('INSERT')]
    assert len(inserts) == 5 and 'BEGIN IMMEDIATE' in statements and statements[-1] == 'COMMIT'


def test_timestamp_cache_is_bounded(storage: Any) -> None:
    """Distinct timestamps do not pile up in the encoder's memory, repeated ones are encoded once, all exactly."""
    from sqlitedos.db import encode_datetime
    from sqlitedos.storage import base

    calls: list[Any] = []
    memo = base._memoised(lambda value: calls.append(value) or encode_datetime(value))
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    stamps = [start + dt.timedelta(microseconds=i) for i in range(3000)]
    assert [memo(stamp) for stamp in stamps] == [encode_datetime(stamp) for stamp in stamps]
    held = [cell.cell_contents for cell in memo.__closure__]
    assert all(len(item) <= 2 for item in held if isinstance(item, (dict, list, set))), 'the cache grows with the rows'
    calls.clear()
    assert memo(NOW) == memo(NOW) == encode_datetime(NOW) and len(calls) == 1

    rows = [node_row(storage, ctime=stamp, mtime=NOW) for stamp in stamps]
    pks = storage.bulk_insert(EntityTypes.NODE, rows)
    stored = {
        pk: (ctime, mtime)
        for pk, ctime, mtime in storage.get_session().execute('SELECT id, ctime, mtime FROM db_dbnode')
    }
    assert [stored[pk] for pk in pks] == [(encode_datetime(stamp), encode_datetime(NOW)) for stamp in stamps]
