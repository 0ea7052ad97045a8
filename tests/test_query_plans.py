"""Plans chosen from the query and the data: filters that match everything are dropped when parsing, and "the
newest N of a type" ordered by ctime/mtime walks that index when the type is common. Answers never change."""

from __future__ import annotations

import datetime
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlitedos import EntityTypes, QueryBuilder, SqliteTempBackend
from sqlitedos.query import parse
from sqlitedos.query.compiler import compile_query

TYPES = ['data.core.int.Int.', 'data.core.dict.Dict.', 'process.calculation.CalculationNode.']
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
CTIME_INDEX = 'ix_db_dbnode_db_dbnode_ctime'
MTIME_INDEX = 'ix_db_dbnode_db_dbnode_mtime'
TYPE_INDEX = 'ix_db_dbnode_db_dbnode_node_type'


def new_storage() -> SqliteTempBackend:
    return SqliteTempBackend(SqliteTempBackend.create_profile())


def fill(storage, nodes: list[tuple[int, int, int, str | None]]) -> None:
    """Nodes of (type index, ctime step, mtime step, process_type)."""
    user = storage.default_user.id
    rows = [
        {
            'node_type': TYPES[kind],
            'user_id': user,
            'ctime': T0 + datetime.timedelta(seconds=ctime),
            'mtime': T0 + datetime.timedelta(seconds=mtime),
            'process_type': process_type,
            'label': f'l{index % 3}',
            'attributes': {'i': index},
        }
        for index, (kind, ctime, mtime, process_type) in enumerate(nodes)
    ]
    storage.bulk_insert(EntityTypes.NODE, rows, allow_defaults=True)


def unoptimised(data: dict) -> list:
    """The query's rows as compiled with no filter dropped (``matches_everything`` never true)."""
    with mock.patch.object(parse, 'matches_everything', return_value=False):
        return compile_query(data)


# --- filters that match everything --------------------------------------------------------------------------------


def test_a_like_of_only_percent_on_a_not_null_column_is_dropped(temp_storage) -> None:
    qb = QueryBuilder(backend=temp_storage).append(entity_type='', orm_base='node', tag='n', project=['id'])
    data = qb.as_dict()
    assert data['filters']['n'] == {'node_type': {'like': '%'}}  # what aiida's base Node class adds
    assert parse.parse_query(data).filters == {}
    for spec in (
        {'node_type': {'like': '%%'}},
        {'label': {'ilike': '%'}},
        {'or': [{'uuid': {'like': '%'}}, {'id': 1}]},
    ):
        assert parse.parse_query(dict(data, filters={'n': spec})).filters == {}, spec
    # AND keeps the other parts.
    kept = parse.parse_query(dict(data, filters={'n': {'node_type': {'like': '%'}, 'id': {'>': 3}}})).filters['n']
    assert isinstance(kept, parse.Comparison) and kept.field.column == 'id'
    # Not everything: NULL (process_type), JSON values, negation, a literal character, one-character wildcards.
    for spec in (
        {'process_type': {'like': '%'}},
        {'attributes.x': {'like': '%'}},
        {'node_type': {'~like': '%'}},
        {'node_type': {'like': '%a%'}},
        {'node_type': {'like': '_%'}},
        {'node_type': {'like': '\\%'}},
    ):
        assert parse.parse_query(dict(data, filters={'n': spec})).filters != {}, spec


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers(0, 9), st.sampled_from([None, '', 'aiida.x'])),
        max_size=25,
    ),
    specs=st.lists(
        st.sampled_from(
            [
                {'node_type': {'like': '%'}},
                {'node_type': {'like': '%%%'}},
                {'label': {'ilike': '%'}},
                {'process_type': {'like': '%'}},
                {'node_type': {'!like': '%'}},
                {'or': [{'node_type': {'like': '%'}}, {'id': {'<': 3}}]},
                {'!and': [{'node_type': {'like': '%'}}, {'label': 'l1'}]},
                {'!or': [{'label': {'like': '%'}}, {'id': 2}]},
                {'node_type': {'and': [{'like': '%'}, {'like': 'data.%'}]}},
                {'label': 'l2'},
                {'node_type': {'like': 'data.%'}},
            ]
        ),
        max_size=3,
    ),
    outer=st.booleans(),
)
def test_dropping_match_all_filters_changes_no_answer(nodes, specs, outer) -> None:
    storage = new_storage()
    try:
        fill(storage, nodes)
        user = storage.default_user.id
        calc = storage.bulk_insert(EntityTypes.NODE, [{'node_type': TYPES[2], 'user_id': user}], allow_defaults=True)
        if len(nodes) > 1:
            storage.bulk_insert(
                EntityTypes.LINK, [{'input_id': 1, 'output_id': calc[0], 'label': 'x', 'type': 'input_calc'}]
            )
        filters: dict = {}
        for spec in specs:  # later specs of the same key (and, or ...) go into an AND of their own
            filters = {'and': [filters, spec]} if filters else dict(spec)
        qb = QueryBuilder(backend=storage).append(entity_type='', orm_base='node', tag='n', project=['id'])
        qb.append(entity_type='', orm_base='node', tag='m', with_incoming='n', outerjoin=outer, project=['id'])
        qb.add_filter('n', filters)
        qb.add_filter('m', filters)
        data = qb.as_dict()
        connection = storage.get_session()
        plain = unoptimised(data)
        expected = sorted(connection.execute(plain.sql, plain.params).fetchall(), key=repr)
        optimised = storage.query().compile(data)
        assert sorted(connection.execute(optimised.sql, optimised.params).fetchall(), key=repr) == expected
    finally:
        storage.close()


def test_the_ctime_index_answers_alone_without_the_base_filter(temp_storage) -> None:
    """``node_type LIKE '%'`` kept the ctime index from covering "the newest 100 nodes" (every row was read)."""
    qb = QueryBuilder(backend=temp_storage).append(entity_type='', orm_base='node', tag='n', project=['id'])
    qb.order_by({'n': [{'ctime': {'order': 'desc'}}]}).limit(100)
    plan = temp_storage.query().analyze_query(qb.as_dict())
    assert f'COVERING INDEX {CTIME_INDEX}' in plan and 'TEMP B-TREE' not in plan
    # An offset page by id reads the primary key alone, as the bare SQL does.
    page = QueryBuilder(backend=temp_storage).append(entity_type='', orm_base='node', tag='n', project=['id'])
    page.order_by({'n': 'id'}).limit(100).offset(50)
    compiled = temp_storage.query().compile(page.as_dict())
    connection = temp_storage.get_session()
    raw = connection.execute('EXPLAIN QUERY PLAN SELECT id FROM db_dbnode ORDER BY id LIMIT 100 OFFSET 50').fetchall()
    ours = connection.execute(f'EXPLAIN QUERY PLAN {compiled.sql}', compiled.params).fetchall()
    assert [row[3] for row in ours] == [row[3].replace('db_dbnode', 't0') for row in raw]


# --- the newest N of a type by ctime / mtime ----------------------------------------------------------------------


def newest(storage, kind: int, column: str, order: str, limit: int, offset: int, threshold: int | None) -> dict:
    qb = QueryBuilder(backend=storage).append(entity_type=TYPES[kind], orm_base='node', tag='n', project=['id', column])
    if threshold is not None:
        qb.add_filter('n', {'attributes.i': {'>': threshold}})
    return qb.order_by({'n': [{column: {'order': order}}]}).limit(limit).offset(offset).as_dict()


def same_ordered_rows(walked: list, indexed: list) -> None:
    """Both lists ordered by the second value; rows of equal value may come in either order, and at the two edges
    of the page (limit, offset) a tie may even be cut at different rows."""
    assert [row[1] for row in walked] == [row[1] for row in indexed]
    if not indexed:
        return
    edges = {indexed[0][1], indexed[-1][1]}
    assert sorted(row for row in walked if row[1] not in edges) == sorted(row for row in indexed if row[1] not in edges)


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 15), st.integers(0, 15), st.just(None)), max_size=50),
    kind=st.integers(0, 2),
    column=st.sampled_from(['ctime', 'mtime']),
    order=st.sampled_from(['asc', 'desc']),
    limit=st.integers(0, 8),
    offset=st.integers(0, 5),
    threshold=st.one_of(st.none(), st.integers(-1, 50)),
)
def test_the_index_walk_returns_the_rows_of_the_type_index_plan(
    nodes, kind, column, order, limit, offset, threshold
) -> None:
    storage = new_storage()
    try:
        fill(storage, nodes)
        data = newest(storage, kind, column, order, limit, offset, threshold)
        compiled = storage.query().compile(data)
        assert compiled.pk_walk is not None and compiled.pk_walk.index == (
            CTIME_INDEX if column == 'ctime' else MTIME_INDEX
        )
        connection = storage.get_session()
        indexed = connection.execute(compiled.sql, compiled.params).fetchall()
        walked = connection.execute(compiled.pk_walk.sql, compiled.params).fetchall()
        plan = ' '.join(
            row[3] for row in connection.execute(f'EXPLAIN QUERY PLAN {compiled.pk_walk.sql}', compiled.params)
        )
        assert compiled.pk_walk.index in plan and 'TEMP B-TREE' not in plan
        same_ordered_rows(walked, indexed)
        stored = dict(connection.execute(f'SELECT id, {column} FROM db_dbnode'))  # the column's text, as SQL gives it
        same_ordered_rows([(row[0], stored[row[0]]) for row in storage.query().all(data)], indexed)
    finally:
        storage.close()


def test_the_data_chooses_the_ctime_walk() -> None:
    storage = new_storage()
    try:
        fill(storage, [(1, index, 3000 - index, None) for index in range(3000)] + [(0, 5, 5, None)] * 5)
        backend = storage.query()
        for column, index in (('ctime', CTIME_INDEX), ('mtime', MTIME_INDEX)):
            common = backend.analyze_query(newest(storage, 1, column, 'desc', 10, 0, None))
            rare = backend.analyze_query(newest(storage, 0, column, 'desc', 10, 0, None))
            assert index in common and 'TEMP B-TREE' not in common, common  # walks the index of the common type
            assert TYPE_INDEX in rare and index not in rare, rare  # finds the 5 rare ones by the type index
        got = [row[0] for row in backend.iterall(newest(storage, 1, 'ctime', 'desc', 3, 0, None))]
        assert got == [3000, 2999, 2998]
        got = [row[0] for row in backend.iterall(newest(storage, 1, 'mtime', 'asc', 2, 1, None))]
        assert got == [2999, 2998]
    finally:
        storage.close()


def test_only_plain_orderings_get_an_index_walk(temp_storage) -> None:
    backend = temp_storage.query()
    qb = QueryBuilder(backend=temp_storage).append(entity_type=TYPES[0], orm_base='node', tag='n', project=['id'])
    qb.limit(5).order_by({'n': [{'ctime': 'desc'}]})
    assert backend.compile(qb.as_dict()).pk_walk.index == CTIME_INDEX
    qb.order_by({'n': [{'ctime': 'desc'}, {'id': 'desc'}]})  # two terms: the planner's choice
    assert backend.compile(qb.as_dict()).pk_walk is None
    qb.order_by({'n': [{'label': 'desc'}]})  # no walk for other columns
    assert backend.compile(qb.as_dict()).pk_walk is None


def test_a_common_type_far_from_where_the_walk_starts_is_sorted() -> None:
    """The Dicts are the oldest half: walking from the newest node would read the other half first."""
    storage = new_storage()
    try:
        fill(
            storage, [(1, index, index, None) for index in range(3000)] + [(2, 3000 + i, 0, None) for i in range(3000)]
        )
        backend = storage.query()
        newest_dicts = newest(storage, 1, 'ctime', 'desc', 10, 0, None)
        plan = backend.analyze_query(newest_dicts)
        assert TYPE_INDEX in plan and CTIME_INDEX not in plan, plan
        assert [row[0] for row in backend.iterall(newest_dicts)] == list(range(3000, 2990, -1))
        oldest_dicts = backend.analyze_query(newest(storage, 1, 'ctime', 'asc', 10, 0, None))
        assert CTIME_INDEX in oldest_dicts, oldest_dicts  # from the old end the walk finds them at once
    finally:
        storage.close()


# --- links between nodes of two types -----------------------------------------------------------------------------


def typed_link_query(storage, keyword: str, first: int, second: int, threshold: int | None) -> dict:
    qb = QueryBuilder(backend=storage).append(entity_type=TYPES[first], orm_base='node', tag='c', project=['id'])
    qb.append(entity_type=TYPES[second], orm_base='node', tag='d', project=['id'], **{keyword: 'c'})
    if threshold is not None:
        qb.add_filter('d', {'attributes.i': {'>': threshold}})
    return qb.as_dict()


def add_links(storage, links: list[tuple[int, int]], count: int) -> None:
    rows = [
        {'input_id': 1 + a % count, 'output_id': 1 + b % count, 'label': f'l{index}', 'type': 'input_calc'}
        for index, (a, b) in enumerate(links)
    ]
    storage.bulk_insert(EntityTypes.LINK, rows)


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.integers(0, 2), min_size=1, max_size=30),
    links=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40),
    keyword=st.sampled_from(['with_incoming', 'with_outgoing']),
    first=st.integers(0, 2),
    second=st.integers(0, 2),
    threshold=st.one_of(st.none(), st.integers(-1, 30)),
)
def test_the_link_scan_returns_the_rows_of_the_type_index_plan(kinds, links, keyword, first, second, threshold) -> None:
    storage = new_storage()
    try:
        fill(storage, [(kind, 0, 0, None) for kind in kinds])
        add_links(storage, links, len(kinds))
        data = typed_link_query(storage, keyword, first, second, threshold)
        compiled = storage.query().compile(data)
        assert compiled.link_scan is not None
        connection = storage.get_session()
        indexed = sorted(connection.execute(compiled.sql, compiled.params).fetchall())
        scanned = sorted(connection.execute(compiled.link_scan.sql, compiled.params).fetchall())
        plan = ' '.join(
            row[3] for row in connection.execute(f'EXPLAIN QUERY PLAN {compiled.link_scan.sql}', compiled.params)
        )
        assert TYPE_INDEX not in plan, plan
        assert scanned == indexed
        assert sorted(tuple(row) for row in storage.query().all(data)) == indexed
    finally:
        storage.close()


def test_the_data_chooses_the_link_scan() -> None:
    storage = new_storage()
    try:
        # 300 calculations with one Int input each, and 5 Dicts that feed one calculation each.
        fill(storage, [(2, 0, 0, None)] * 300 + [(0, 0, 0, None)] * 300 + [(1, 0, 0, None)] * 5)
        links = [(300 + k, k) for k in range(300)] + [(600 + k, k) for k in range(5)]
        add_links(storage, links, 605)
        backend = storage.query()
        common = backend.analyze_query(typed_link_query(storage, 'with_outgoing', 2, 0, None))
        assert 'SCAN e1' in common and TYPE_INDEX not in common, common  # every link: scan them
        rare = backend.analyze_query(typed_link_query(storage, 'with_outgoing', 2, 1, None))
        assert TYPE_INDEX in rare, rare  # 5 Dicts: start from them on the type index
        assert sorted(backend.all(typed_link_query(storage, 'with_outgoing', 2, 1, None))) == [
            [k + 1, 601 + k] for k in range(5)
        ]
    finally:
        storage.close()


def test_only_plain_typed_link_joins_get_a_link_scan(temp_storage) -> None:
    backend = temp_storage.query()
    data = typed_link_query(temp_storage, 'with_outgoing', 2, 0, 3)
    assert backend.compile(data).link_scan is not None
    for change in (
        {'limit': 5},
        {'order_by': [{'c': ['id']}]},
        {'filters': {**data['filters'], 'c--d': {'label': 'x'}}},  # an indexed edge column: SQLite's plan
        {'filters': {**data['filters'], 'c': {'label': 'x'}}},
        {'path': [data['path'][0], {**data['path'][1], 'outerjoin': True}]},
    ):
        assert backend.compile({**data, **change}).link_scan is None, change
