""" "The newest N nodes of a type" may run as a primary-key walk: same rows as the indexed plan, chosen by the data."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlitedos import EntityTypes, QueryBuilder, SqliteTempBackend

TYPES = ['data.core.int.Int.', 'data.core.dict.Dict.', 'data.core.str.Str.', 'process.calculation.CalculationNode.']


def query(storage, entity_type: str, order: str, limit: int, offset: int, threshold: int | None) -> dict:
    qb = QueryBuilder(backend=storage).append(entity_type=entity_type, orm_base='node', tag='n', project=['id'])
    if threshold is not None:
        qb.add_filter('n', {'attributes.i': {'>': threshold}})
    return qb.order_by({'n': [{'id': {'order': order}}]}).limit(limit).offset(offset).as_dict()


def fill(storage, types: list[int]) -> None:
    user = storage.default_user.id
    rows = [{'node_type': TYPES[kind], 'user_id': user, 'attributes': {'i': index}} for index, kind in enumerate(types)]
    storage.bulk_insert(EntityTypes.NODE, rows, allow_defaults=True)


@settings(max_examples=60, deadline=None)
@given(
    types=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    kind=st.integers(0, 3),
    order=st.sampled_from(['asc', 'desc']),
    limit=st.integers(0, 8),
    offset=st.integers(0, 5),
    threshold=st.one_of(st.none(), st.integers(-1, 60)),
)
def test_walk_returns_the_rows_of_the_indexed_plan(types, kind, order, limit, offset, threshold) -> None:
    storage = SqliteTempBackend(SqliteTempBackend.create_profile())
    try:
        fill(storage, types)
        backend = storage.query()
        compiled = backend.compile(query(storage, TYPES[kind], order, limit, offset, threshold))
        assert compiled.pk_walk is not None
        connection = storage.get_session()
        indexed = connection.execute(compiled.sql, compiled.params).fetchall()
        walked = connection.execute(compiled.pk_walk.sql, compiled.params).fetchall()
        assert walked == indexed
        # And what the builder returns is that, whichever plan the data chose.
        expected = [row[0] for row in indexed]
        assert [
            row[0] for row in backend.iterall(query(storage, TYPES[kind], order, limit, offset, threshold))
        ] == expected
    finally:
        storage.close()


def test_the_data_chooses_the_plan() -> None:
    storage = SqliteTempBackend(SqliteTempBackend.create_profile())
    try:
        fill(storage, [1] * 2000 + [0] * 5)
        backend = storage.query()
        common = backend.analyze_query(query(storage, TYPES[1], 'desc', 10, 0, None))
        rare = backend.analyze_query(query(storage, TYPES[0], 'desc', 10, 0, None))
        assert 'TEMP B-TREE' not in common and 'USING INDEX' not in common  # walks the ids of the common type
        assert 'ix_db_dbnode_db_dbnode_node_type' in rare  # finds the 5 rare ones by the index
    finally:
        storage.close()


def test_only_plain_type_queries_get_a_walk(temp_storage) -> None:
    backend = temp_storage.query()
    qb = QueryBuilder(backend=temp_storage).append(entity_type=TYPES[0], orm_base='node', tag='n', project=['id'])
    assert backend.compile(qb.as_dict()).pk_walk is None  # no limit
    qb.limit(5).order_by({'n': 'id'})
    assert backend.compile(qb.as_dict()).pk_walk is not None
    qb.add_filter('n', {'label': 'x'})  # an indexed column: let the planner use its index
    assert backend.compile(qb.as_dict()).pk_walk is None


def test_the_choice_follows_the_data_as_it_changes() -> None:
    storage = SqliteTempBackend(SqliteTempBackend.create_profile())
    try:
        fill(storage, [1] * 2000 + [0] * 5)
        backend = storage.query()
        rare = query(storage, TYPES[0], 'desc', 10, 0, None)
        assert 'ix_db_dbnode_db_dbnode_node_type' in backend.analyze_query(rare)
        fill(storage, [0] * 3000)  # the rare type becomes the common one: the remembered choice must not stick
        assert 'USING INDEX' not in backend.analyze_query(rare)
        assert [row[0] for row in backend.iterall(rare)] == list(range(5005, 4995, -1))
    finally:
        storage.close()
