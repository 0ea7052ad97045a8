"""aiida's recorded query dicts and answers, run by sqlitedos on the aiida-made fixture profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / 'fixtures' / 'aiida-2.9.4'
MANIFEST_QUERIES = json.loads((FIXTURES / 'manifest.json').read_text('utf-8'))['queries']
SEMANTICS = json.loads((FIXTURES / 'postgres-semantics.json').read_text('utf-8'))

#: Queries whose ``order_by`` leaves ties: rows with equal sort keys may come in another order (plan-dependent, in
#: aiida too); the sort key is the first projected column.
ORDER_TIES = {'calc_inputs'}


def flat(rows: list[list[Any]]) -> list[Any]:
    return [row[0] for row in rows] if rows and len(rows[0]) == 1 else rows


@pytest.mark.parametrize('name', sorted(MANIFEST_QUERIES))
def test_manifest_query(fixture_storage, name):
    item = MANIFEST_QUERIES[name]
    rows = flat(list(fixture_storage.query().iterall(item['queryhelp'])))
    expected = item['result']
    if name in ORDER_TIES:
        assert [row[0] for row in rows] == [row[0] for row in expected]
        assert sorted(map(json.dumps, rows)) == sorted(map(json.dumps, expected))
    else:
        assert rows == expected


@pytest.mark.parametrize('name', sorted(SEMANTICS))
def test_postgres_semantics(fixture_storage, name):
    """The answers of aiida on PostgreSQL, JSON types included (``true`` is not ``1``)."""
    item = SEMANTICS[name]
    rows = fixture_storage.query().all(item['queryhelp'])
    assert json.dumps(rows) == json.dumps(item['postgres'])


def test_count_first_and_iterdict(fixture_storage, manifest):
    query = fixture_storage.query()
    qh = MANIFEST_QUERIES['label_like']['queryhelp']
    assert query.count(qh) == len(MANIFEST_QUERIES['label_like']['result'])
    assert query.first(qh) == ['label-1']
    assert next(query.iterdict(qh)) == {'n': {'label': 'label-1'}}
    assert list(query.iterall(qh, batch_size=2)) == [[label] for label in MANIFEST_QUERIES['label_like']['result']]
    everything = {'path': [{'entity_type': '', 'orm_base': 'node', 'tag': 'n'}], 'project': {'n': ['id']}}
    assert query.count(everything) == manifest['counts']['nodes']


def test_creation_statistics_and_plan(fixture_storage, manifest):
    stats = fixture_storage.query().get_creation_statistics()
    assert stats['total'] == manifest['counts']['nodes']
    assert sum(stats['types'].values()) == stats['total'] == sum(stats['ctime_by_day'].values())
    plan = fixture_storage.query().analyze_query(MANIFEST_QUERIES['label_like']['queryhelp'])
    assert 'db_dbnode' in plan or 't0' in plan
    sql = fixture_storage.query().as_sql(MANIFEST_QUERIES['label_like']['queryhelp'], inline=True)
    assert "'label-1'" in sql and "'label-2'" in sql  # the prefix pattern as an index range
