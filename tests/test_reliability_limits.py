"""Limits: values longer than SQLite allows, huge ``in`` lists, and a 20,000-deep provenance chain."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from sqlitedos import QueryBuilder
from sqlitedos.exceptions import ValidationError

DATA_TYPE = 'data.core.int.Int.'
CALC_TYPE = 'process.calculation.calcfunction.CalcFunctionNode.'
CHAIN_LENGTH = 20_000


def dump(storage: Any) -> list[str]:
    return list(storage.get_session().iterdump())


@pytest.mark.skipif(
    not hasattr(sqlite3.Connection, 'setlimit'),
    reason='Connection.setlimit is Python 3.11+: on 3.10 the length limit cannot be lowered from Python',
)
def test_attributes_longer_than_the_length_limit(storage: Any) -> None:
    """SQLITE_MAX_LENGTH (1e9 by default) lowered to 10 kB: a longer value is refused, named, and nothing is written."""
    connection = storage.get_session()
    previous = connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)
    try:
        before = dump(storage)
        node = storage.nodes.create(node_type=DATA_TYPE, user=storage.default_user, label='big')
        node.set_attribute('value', 'x' * 20_000)
        with pytest.raises(ValidationError, match='too big.*as a file'):  # not CorruptStorage: the database is fine
            node.store()
        assert not node.is_stored
        assert dump(storage) == before
        stored = storage.nodes.create(node_type=DATA_TYPE, user=storage.default_user).store()
        with pytest.raises(ValidationError, match='too big'):
            stored.set_attribute('value', 'y' * 20_000)
        assert storage.nodes.get(pk=stored.pk).attributes == {}
    finally:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, previous)


def test_query_with_100000_in_values(storage: Any) -> None:
    ids = storage.bulk_insert(
        'node', [{'node_type': DATA_TYPE, 'user_id': storage.default_user.pk}] * 100, allow_defaults=True
    )
    values = list(range(-50_000, 50_000))
    qb = QueryBuilder(backend=storage).append(
        entity_type=DATA_TYPE, orm_base='node', filters={'id': {'in': values}}, project=['id']
    )
    assert sorted(row[0] for row in qb.all()) == ids
    assert qb.count() == len(ids)
    labels = QueryBuilder(backend=storage).append(
        entity_type=DATA_TYPE, orm_base='node', filters={'label': {'!in': [str(n) for n in values]}}
    )
    assert labels.count() == len(ids)


def test_20000_deep_provenance_chain(dos_storage: Any) -> None:
    """data -input_calc-> calc -create-> data -> ... 20,000 nodes: ancestors and descendants still answer."""
    storage = dos_storage
    user = storage.default_user.pk
    rows = [
        {
            'node_type': CALC_TYPE if index % 2 else DATA_TYPE,
            'user_id': user,
            'label': str(index),
            'attributes': {'sealed': True} if index % 2 else {'value': index},
        }
        for index in range(CHAIN_LENGTH)
    ]
    ids = storage.bulk_insert('node', rows, allow_defaults=True)
    links = [
        {'input_id': source, 'output_id': target, 'label': 'link', 'type': 'input_calc' if index % 2 == 0 else 'create'}
        for index, (source, target) in enumerate(zip(ids, ids[1:]))
    ]
    storage.bulk_insert('link', links, allow_defaults=True)

    def related(keyword: str, pk: int) -> int:
        qb = QueryBuilder(backend=storage)
        qb.append(entity_type='', orm_base='node', tag='start', filters={'id': pk})
        qb.append(entity_type='', orm_base='node', **{keyword: 'start'}, project=['id'])
        return qb.count()

    assert related('with_ancestors', ids[0]) == CHAIN_LENGTH - 1  # every node descends from the first
    assert related('with_descendants', ids[-1]) == CHAIN_LENGTH - 1  # and the last descends from all
    assert related('with_ancestors', ids[CHAIN_LENGTH // 2]) == CHAIN_LENGTH // 2 - 1
