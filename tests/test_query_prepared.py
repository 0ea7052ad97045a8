"""Prepared queries: parsed and compiled once, run again on the current data; a builder keeps its own until changed."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlitedos import EntityTypes, QueryBuilder
from sqlitedos.query.compiler import compile_query
from tests.querydicts import node_query


def fill(storage, count: int, start: int = 0) -> None:
    user = storage.default_user.id
    rows = [
        {'node_type': 'data.core.int.Int.', 'user_id': user, 'label': f'n{i}', 'attributes': {'i': i}}
        for i in range(start, start + count)
    ]
    storage.bulk_insert(EntityTypes.NODE, rows, allow_defaults=True)


def test_a_prepared_query_runs_on_the_current_data(temp_storage):
    fill(temp_storage, 3)
    data = node_query({'attributes.i': {'>=': 1}}, project=['attributes.i'], order_by=[{'n': ['id']}])
    prepared = temp_storage.query().prepare(data)
    assert prepared.all() == [[1], [2]] == temp_storage.query().all(data)
    assert prepared.count() == 2
    fill(temp_storage, 2, start=3)
    assert prepared.all() == [[1], [2], [3], [4]]
    assert list(prepared.iterall(batch_size=1)) == [[1], [2], [3], [4]]
    assert prepared.first() == [1]
    assert next(prepared.iterdict()) == {'n': {'attributes.i': 1}}
    data['filters']['n'] = {}  # the dict may change afterwards: the prepared query does not see it
    assert prepared.count() == 4


def test_a_builder_keeps_its_prepared_query_until_it_changes(temp_storage):
    fill(temp_storage, 4)
    qb = QueryBuilder(backend=temp_storage).append(entity_type='data.core.int.Int.', tag='n', project='label')
    assert sorted(qb.all(flat=True)) == ['n0', 'n1', 'n2', 'n3']
    first = qb.prepare()
    assert qb.prepare() is first
    qb.add_filter('n', {'attributes.i': {'<': 2}})
    assert qb.prepare() is not first
    assert sorted(qb.all(flat=True)) == ['n0', 'n1']
    qb.limit(1)
    assert qb.count() == 1
    qb.order_by({'n': {'id': 'desc'}}).limit(None)
    assert qb.all(flat=True) == ['n1', 'n0']


def test_the_compiler_returns_cells_and_the_backend_builds_entities(temp_storage):
    fill(temp_storage, 1)
    compiled = compile_query(node_query(project=['*']))
    (projection,) = compiled.projections
    assert projection.entity == 'node'
    row = temp_storage.get_session().execute(compiled.sql, compiled.params).fetchone()
    cells = projection.decode(row, 0)
    assert isinstance(cells, dict) and cells['label'] == 'n0'  # a dict of columns, no entity
    (node,) = temp_storage.query().all(node_query(project=['*']))[0]
    assert node.label == 'n0' and node.attributes == {'i': 0}


def test_only_the_backend_imports_the_entities():
    query = Path(__file__).resolve().parent.parent / 'sqlitedos' / 'query'
    importers = set()
    for path in query.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text('utf-8'))):
            if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('sqlitedos.entities'):
                importers.add(path.name)
    assert importers == {'backend.py'}


def test_projected_json_values_keep_their_type_and_digits(temp_storage):
    values = [2**70, -(2**65), True, 1, 1.0, 'a"\\é', None, [1, True], {'k': 'v'}, '', 0.1]
    user = temp_storage.default_user.id
    rows = [{'node_type': 'data.core.dict.Dict.', 'user_id': user, 'attributes': {'v': value}} for value in values]
    temp_storage.bulk_insert(EntityTypes.NODE, rows, allow_defaults=True)
    got = temp_storage.query().all(node_query(project=['attributes.v', 'id'], order_by=[{'n': ['id']}]))
    assert [row[0] for row in got] == values
    assert [type(row[0]) for row in got] == [type(value) for value in values]
    single = temp_storage.query().all(node_query(project=['attributes.v'], order_by=[{'n': ['id']}]))
    assert [row[0] for row in single] == values and [type(row[0]) for row in single] == [type(v) for v in values]
    assert temp_storage.query().all(node_query(project=['attributes.missing'], limit=1)) == [[None]]


def test_the_storage_owns_a_bounded_query_cache(temp_storage):
    from sqlitedos.query.backend import COMPILE_CACHE_SIZE, QueryCache, query_key

    cache = temp_storage._query_cache
    assert isinstance(cache, QueryCache)
    for index in range(COMPILE_CACHE_SIZE + 20):
        temp_storage.query().count(node_query({'id': index}))
    assert len(cache._prepared) == COMPILE_CACHE_SIZE
    assert cache.prepared(query_key(node_query({'id': COMPILE_CACHE_SIZE + 19}))) is not None
    assert cache.prepared(query_key(node_query({'id': 0}))) is None  # the oldest went first
    assert not {'_compiled_queries', '_plan_choices'} & set(vars(temp_storage))
