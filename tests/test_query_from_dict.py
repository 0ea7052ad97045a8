"""``QueryBuilder.from_dict`` reuses the state a query dict gave before; no builder ever sees another's changes.

Each builder below is compared with one rebuilt from scratch (the cache emptied), on answers and on ``as_dict()``.
"""

from __future__ import annotations

import copy
import datetime

import pytest

from sqlitedos import QueryBuilder
from sqlitedos.query import builder as builder_module


def fresh(storage, query: dict) -> QueryBuilder:
    """A builder made with no cache entry, as from_dict made every builder before it had a cache."""
    return QueryBuilder(storage, **copy.deepcopy(query))


@pytest.fixture
def graph(temp_storage):
    """Three Ints 0..2 and a Dict; x=0 feeds a calculation that creates y=2."""
    user = temp_storage.default_user
    nodes = {}

    def create(node_type: str, attributes: dict | None = None):
        node = temp_storage.nodes.create(node_type=node_type, user=user)
        if attributes:
            node.set_attribute_many(attributes)
        return node.store()

    for name, value in (('x', 0), ('z', 1), ('y', 2)):
        nodes[name] = create('data.core.int.Int.', {'value': value, 'flag': value == 1})
    nodes['d'] = create('data.core.dict.Dict.', {'value': 1.0})
    calc = create('process.calculation.calcfunction.CalcFunctionNode.')
    calc.add_incoming(nodes['x'], 'input_calc', 'x')
    nodes['y'].add_incoming(calc, 'create', 'result')
    nodes['calc'] = calc
    return temp_storage, nodes


def base_query(storage) -> dict:
    qb = QueryBuilder(storage).append(entity_type='data.core.int.Int.', tag='n', project=['attributes.value'])
    return qb.order_by({'n': 'id'}).as_dict()


def test_a_dict_seen_before_gives_the_same_builder(graph) -> None:
    storage, _ = graph
    query = base_query(storage)
    first, second = QueryBuilder.from_dict(storage, query), QueryBuilder.from_dict(storage, query)
    assert second._shared  # the second one reuses the first one's state
    expected = fresh(storage, query)
    for builder in (first, second):
        assert builder.as_dict() == expected.as_dict()
        assert builder.all() == expected.all() == [[0], [1], [2]]
        assert builder.count() == 3


@pytest.mark.parametrize(
    'change',
    [
        lambda qb: qb.add_filter('n', {'attributes.value': {'>': 0}}),
        lambda qb: qb.add_projection('n', ['id', 'attributes.flag']),
        lambda qb: qb.append(entity_type='', with_incoming='n', project='id'),
        lambda qb: qb.order_by({'n': [{'id': {'order': 'desc'}}]}),
        lambda qb: qb.limit(1),
        lambda qb: qb.offset(2),
        lambda qb: qb.distinct(),
        lambda qb: qb.set_project_map('n', {'attributes.value': 'v'}),
    ],
)
def test_changing_a_reused_builder_changes_no_other(graph, change) -> None:
    storage, _ = graph
    query = base_query(storage)
    QueryBuilder.from_dict(storage, query).all()  # now known
    reused, other = QueryBuilder.from_dict(storage, query), QueryBuilder.from_dict(storage, query)
    expected = fresh(storage, query)
    before = reused.all()
    change(reused)
    change(expected)
    assert reused.as_dict() == expected.as_dict()
    assert reused.all() == expected.all()
    assert reused.dict() == expected.dict()
    unchanged = fresh(storage, query)
    for builder in (other, QueryBuilder.from_dict(storage, query)):
        assert builder.as_dict() == unchanged.as_dict()
        assert builder.all() == before


def test_what_as_dict_returns_and_the_input_dict_are_copies(graph) -> None:
    storage, _ = graph
    query = base_query(storage)
    QueryBuilder.from_dict(storage, query)
    reused = QueryBuilder.from_dict(storage, query)
    answer = reused.all()
    data = reused.as_dict()
    data['filters']['n']['attributes.value'] = {'>': 1}
    data['path'].append({'entity_type': '', 'tag': 'extra'})
    query['filters']['n']['attributes.value'] = {'>': 1}  # the caller reuses its dict for another query
    assert reused.all() == answer == [[0], [1], [2]]
    assert QueryBuilder.from_dict(storage, base_query(storage)).all() == answer
    assert QueryBuilder.from_dict(storage, query).all() == [[2]]


def test_true_and_one_and_one_point_zero_are_different_queries(graph) -> None:
    storage, _ = graph
    answers = {}
    for value in (True, 1, 1.0):
        qb = QueryBuilder(storage).append(entity_type='data.Data.', tag='n', project='attributes.value')
        qb.add_filter('n', {'attributes.flag' if value is True else 'attributes.value': value})
        query = qb.as_dict()
        QueryBuilder.from_dict(storage, query)
        reused = QueryBuilder.from_dict(storage, query)
        assert reused.as_dict() == fresh(storage, query).as_dict()
        answers[repr(value)] = sorted(reused.all(flat=True), key=repr)
        assert answers[repr(value)] == sorted(fresh(storage, query).all(flat=True), key=repr)
    assert answers == {'True': [1], '1': [1, 1.0], '1.0': [1, 1.0]}


def test_a_dict_with_values_marshal_does_not_write_is_rebuilt_each_time(graph) -> None:
    storage, _ = graph
    qb = QueryBuilder(storage).append(entity_type='data.core.int.Int.', tag='n', project='attributes.value')
    qb.add_filter('n', {'ctime': {'<': datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)}})
    query = qb.as_dict()
    size = len(builder_module._FROM_DICT._entries)
    builders = [QueryBuilder.from_dict(storage, query) for _ in range(2)]
    assert len(builder_module._FROM_DICT._entries) == size
    assert not any(builder._shared for builder in builders)
    assert [sorted(builder.all(flat=True)) for builder in builders] == [[0, 1, 2]] * 2


def test_a_list_and_a_tuple_and_keys_in_another_order_are_different_dicts(graph) -> None:
    """Equal-looking dicts that a fresh builder keeps apart (``as_dict()`` shows the difference) stay apart."""
    storage, nodes = graph
    ids = [nodes['x'].id, nodes['z'].id]
    queries = []
    for spec in (
        {'id': {'in': ids}, 'attributes.value': {'>=': 0}},
        {'id': {'in': tuple(ids)}, 'attributes.value': {'>=': 0}},
        {'attributes.value': {'>=': 0}, 'id': {'in': ids}},
    ):
        qb = QueryBuilder(storage).append(entity_type='data.core.int.Int.', tag='n', project='attributes.value')
        queries.append(qb.add_filter('n', spec).as_dict())
    for query in queries * 2:  # the second round comes from the cache
        reused, expected = QueryBuilder.from_dict(storage, query), fresh(storage, query).as_dict()
        assert reused.as_dict() == expected
        assert list(reused.as_dict()['filters']['n']) == list(expected['filters']['n'])
        assert type(reused.as_dict()['filters']['n']['id']['in']) is type(query['filters']['n']['id']['in'])
        assert sorted(reused.all(flat=True)) == [0, 1]
    assert all(QueryBuilder.from_dict(storage, query)._shared for query in queries)


def test_the_cache_key_is_exact_and_stable() -> None:
    """``query_key`` tells apart what ``==`` would mix up and gives a dict the same key however it is referenced
    (marshal's later formats did not: their back-references follow reference counts)."""
    from sqlitedos.query.backend import query_key

    distinct = [{'v': True}, {'v': 1}, {'v': 1.0}, {'v': [1]}, {'v': (1,)}, {1: 'v'}, {'1': 'v'}, {'a': 1, 'b': 2}]
    distinct.append({'b': 2, 'a': 1})
    keys = [query_key(value) for value in distinct]
    assert None not in keys and len(set(keys)) == len(keys)
    shared = ['tag']
    query = {'path': [{'tag': 'n'}], 'project': {'n': shared}}
    first = query_key(query)
    extra_references = [shared, query['path'][0]]
    assert query_key(query) == first and query_key(copy.deepcopy(query)) == first
    assert extra_references  # held until here
    loop: list = []
    loop.append(loop)
    for unkeyable in ({'v': datetime.date(2026, 1, 1)}, {'v': loop}, {'v': _Text('x')}):
        assert query_key(unkeyable) is None


class _Text(str):
    """A str subclass: its methods could differ from str's, so it gets no cache key."""


def test_a_dict_that_holds_itself_is_refused_cleanly(graph) -> None:
    from sqlitedos.exceptions import InputValidationError

    storage, _ = graph
    query = base_query(storage)
    loop = {'attributes.value': {'>': 0}}
    loop['and'] = [loop]
    query['filters']['n'] = loop
    with pytest.raises(InputValidationError, match='nests too deeply'):
        QueryBuilder.from_dict(storage, query)
    with pytest.raises(InputValidationError, match='nests too deeply'):
        storage.query().all(query)
    assert QueryBuilder.from_dict(storage, base_query(storage)).all() == [[0], [1], [2]]


def test_joins_and_edge_tags_survive_reuse(graph) -> None:
    storage, nodes = graph
    qb = QueryBuilder(storage).append(entity_type='data.Data.', tag='d', filters={'id': nodes['x'].id})
    qb.append(
        entity_type='process.calculation.CalculationNode.',
        tag='c',
        with_incoming='d',
        project='id',
        edge_project='label',
    )
    qb.append(entity_type='data.Data.', with_incoming='c', project='id')
    query = qb.as_dict()
    QueryBuilder.from_dict(storage, query)
    reused = QueryBuilder.from_dict(storage, query)
    assert reused.as_dict() == fresh(storage, query).as_dict()
    assert sorted(reused.all()) == sorted(fresh(storage, query).all())
    assert sorted(reused.all()[0], key=str) == sorted([nodes['calc'].id, 'x', nodes['y'].id], key=str)
    with pytest.raises(Exception, match='already used'):
        reused.append(entity_type='data.Data.', tag='d--c')  # the edge tag is known to the reused builder too
