"""The cases where aiida 2.9.4's SQLite backend is wrong or refuses (SPEC 5.7, 5.9): sqlitedos gives the answer
aiida documents and its PostgreSQL backend returns. Each case is written up in docs/query-semantics.md."""

from __future__ import annotations

import datetime as dt

import pytest

from sqlitedos import QueryBuilder
from sqlitedos.exceptions import InputValidationError

DICT = 'data.core.dict.Dict.'


def qb(storage):
    return QueryBuilder(backend=storage)


def test_bool_is_not_int(fixture_storage):
    """aiida on SQLite: ``== 1`` matches JSON true and ``== True`` matches 1. PostgreSQL keeps them apart."""
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.flag': 1}).count() == 0
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.flag': True}).count() == 4
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.i': {'in': [True, 4]}}).count() == 1


def test_of_type_boolean_matches_booleans_only(fixture_storage):
    query = qb(fixture_storage).append(
        entity_type='', filters={'attributes.value': {'of_type': 'boolean'}}, project='node_type'
    )
    assert set(query.all(flat=True)) == {'data.core.bool.Bool.'}
    numbers = qb(fixture_storage).append(
        entity_type='', filters={'attributes.value': {'of_type': 'number'}}, project='node_type'
    )
    assert 'data.core.bool.Bool.' not in set(numbers.all(flat=True))


def test_none_comparisons(fixture_storage):
    """aiida on SQLite raises TypeError; PostgreSQL answers no rows for ``== None`` on a JSON path."""
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.none': None}).count() == 0
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.none': {'of_type': 'null'}}).count() == 8
    # On a nullable column, None is SQL NULL.
    data = qb(fixture_storage).append(entity_type='data.Data.', filters={'process_type': None}).count()
    assert data == qb(fixture_storage).append(entity_type='data.Data.').count()
    assert qb(fixture_storage).append(entity_type='', filters={'process_type': {'!==': None}}).count() > 0


def test_int_does_not_match_real(fixture_storage):
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.f': 1}).count() == 0
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.f': 3}).count() == 1  # 3.0 == 3
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.f': {'<': 2}}).count() == 1


def test_contains_on_whole_column(fixture_storage):
    query = qb(fixture_storage).append(entity_type=DICT, filters={'attributes': {'contains': {'flag': True}}})
    assert query.count() == 4
    assert qb(fixture_storage).append(entity_type=DICT, filters={'extras': {'contains': {}}}).count() == 8


def test_array_index_in_path(fixture_storage):
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.nested.y.0': 1}).count() == 8
    query = qb(fixture_storage).append(
        entity_type=DICT, filters={'attributes.nested.y.2.z': 4}, project=['attributes.nested.y.2', 'attributes.tags.0']
    )
    assert query.all() == [[{'z': 4}, 'a']]


def test_has_key_on_arrays_is_postgres(fixture_storage):
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.tags': {'has_key': 'a'}}).count() == 8
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.nested': {'has_key': 'x'}}).count() == 8
    assert qb(fixture_storage).append(entity_type=DICT, filters={'attributes.nested': {'has_key': 'q'}}).count() == 0


def test_json_booleans_projected_as_booleans(fixture_storage):
    flags = qb(fixture_storage).append(entity_type=DICT, project='attributes.flag').all(flat=True)
    assert set(flags) == {True, False} and all(isinstance(flag, bool) for flag in flags)
    casted = qb(fixture_storage).append(entity_type=DICT, project=[{'attributes.flag': {'cast': 'b'}}]).all(flat=True)
    assert sorted(casted) == sorted(flags)


def test_date_cast_on_json(fixture_storage):
    """aiida on SQLite: NotImplementedError. Here an ISO text in JSON becomes a datetime (projection, order)."""
    query = qb(fixture_storage).append(entity_type='', project=[{'extras.rank': {'cast': 'i'}}])
    query.order_by({'node_1': {'ctime': 'asc'}})
    assert query.first() is not None
    comment = qb(fixture_storage).append(entity_type='log', project=[{'metadata.asctime': {'cast': 't'}}])
    assert isinstance(comment.first(flat=True), str)


def test_date_cast_projection(temp_storage):
    connection = temp_storage.get_session()
    user = connection.execute(
        "INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ('d@x', '', '', '') RETURNING id"
    ).fetchone()[0]
    for index, when in enumerate(['2024-05-01T10:00:00+00:00', '2023-01-01T00:00:00+02:00']):
        connection.execute(
            'INSERT INTO db_dbnode (uuid, node_type, label, description, ctime, mtime, attributes, extras, '
            "repository_metadata, user_id) VALUES (?, '', '', '', '2026-01-01 00:00:00.000000', "
            "'2026-01-01 00:00:00.000000', ?, '{}', '{}', ?)",
            (f'u{index}', f'{{"when": "{when}"}}', user),
        )
    query = qb(temp_storage).append(entity_type='', tag='n', project=[{'attributes.when': {'cast': 'd'}}])
    query.order_by({'n': {'attributes.when': {'order': 'asc', 'cast': 'd'}}})
    values = query.all(flat=True)
    assert values == sorted(values) and all(isinstance(value, dt.datetime) for value in values)
    later = qb(temp_storage).append(
        entity_type='', filters={'attributes.when': {'>': dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)}}
    )
    assert later.count() == 1


def test_func_min_is_the_minimum(fixture_storage):
    query = qb(fixture_storage).append(entity_type='data.core.int.Int.', tag='i')
    values = query.add_projection('i', 'attributes.value').all(flat=True)
    assert query.add_projection('i', [{'attributes.value': {'func': 'min', 'cast': 'i'}}]).all(flat=True) == [
        min(values)
    ]
    assert query.add_projection('i', [{'id': {'func': 'min'}}]).first(flat=True) == 1


def test_membership_and_recursive_edges(fixture_storage):
    members = qb(fixture_storage).append(entity_type='group.core', tag='g', filters={'label': 'group-public-1'})
    members.append(entity_type='', with_group='g', edge_project=['dbnode_id', 'dbgroup_id'], project='id')
    rows = members.all()
    assert len(rows) == 10 and all(row[0] == row[1] for row in rows)
    first = 1
    descendants = qb(fixture_storage).append(entity_type='', tag='a', filters={'id': first})
    descendants.append(
        entity_type='',
        tag='d',
        with_ancestors='a',
        edge_project=['depth', 'ancestor_id', 'path'],
        edge_filters={'depth': {'<': 5}},
        project='id',
    )
    rows = descendants.all()
    assert rows and all(row[2] == first for row in rows)
    for node, depth, _, path in rows:
        assert path[0] == first and path[-1] == node and len(path) == depth + 2


def test_metadata_subkeys(fixture_storage):
    workdir = qb(fixture_storage).append(entity_type='computer', project='metadata.workdir').first(flat=True)
    assert workdir == '/scratch/{username}/aiida_run/'
    assert (
        qb(fixture_storage).append(entity_type='computer', filters={'metadata.workdir': {'like': '/scratch%'}}).count()
        == 1
    )
    assert qb(fixture_storage).append(entity_type='log', filters={'_metadata.levelname': 'WARNING'}).count() >= 1


def test_project_map_renames_keys(fixture_storage):
    query = qb(fixture_storage).append(entity_type=DICT, tag='d', project=['attributes.i'])
    query.set_project_map('d', {'attributes.i': 'i'})
    assert all(set(row['d']) == {'i'} for row in query.dict())


def test_plain_column_operators(fixture_storage):
    """Length operators work on text columns, ``=>``/``=<`` on any column; the JSON-only ones say so."""
    assert qb(fixture_storage).append(entity_type='', filters={'label': {'of_length': 7}}).count() == 10
    assert qb(fixture_storage).append(entity_type='', filters={'id': {'=>': 60}}).count() == 6
    with pytest.raises(InputValidationError, match='has_key'):
        qb(fixture_storage).append(entity_type='', filters={'label': {'has_key': 'x'}}).count()


def test_outerjoin_with_outgoing_is_outer(fixture_storage):
    """aiida keeps the link join of ``with_outgoing`` inner; a real outer join keeps vertices without inputs."""
    query = qb(fixture_storage).append(entity_type='data.core.int.Int.', tag='i', project='id')
    query.append(entity_type='', with_outgoing='i', outerjoin=True, project='id')
    rows = query.all()
    assert any(row[1] is None for row in rows)
    assert {row[0] for row in rows} == set(
        qb(fixture_storage).append(entity_type='data.core.int.Int.', project='id').all(flat=True)
    )


def test_nulls_sort_as_in_postgres(fixture_storage):
    query = qb(fixture_storage).append(entity_type='', tag='n', project='process_type').order_by({'n': 'process_type'})
    values = query.all(flat=True)
    assert values[-1] is None and values[0] is not None
    values = query.order_by({'n': {'process_type': 'desc'}}).all(flat=True)
    assert values[0] is None


def test_analyze_query(fixture_storage):
    plan = qb(fixture_storage).append(entity_type=DICT).analyze_query()
    assert 'ix_db_dbnode_db_dbnode_node_type' in plan


def test_of_type_null_matches_a_missing_key(fixture_storage, manifest):
    """Both aiida backends count a missing key as null for ``of_type`` (tests/interop checks aiida's own answer)."""
    expected = sorted(node['uuid'] for node in manifest['nodes'] if node['attributes'].get('value') is None)
    query = qb(fixture_storage).append(
        entity_type='', filters={'attributes.value': {'of_type': 'null'}}, project='uuid'
    )
    assert sorted(query.all(flat=True)) == expected
    assert 0 < len(expected) < len(manifest['nodes'])
    negated = qb(fixture_storage).append(entity_type='', filters={'attributes.value': {'!of_type': 'null'}})
    assert negated.count() == len(manifest['nodes']) - len(expected)


def test_outer_filters_in_where_gives_aiidas_answer(fixture_storage):
    """``query(outer_filters_in_where=True)`` (what the aiida plugin uses) filters the outer vertex in ``WHERE``,
    as aiida-core does: Int nodes without a matching input are dropped instead of kept with ``None``."""
    query = qb(fixture_storage).append(entity_type='data.core.int.Int.', tag='i', project='id')
    query.append(entity_type='', with_outgoing='i', outerjoin=True, filters={'id': {'>': 0}}, project='id')
    data = query.as_dict()
    ours = fixture_storage.query().all(data)
    aiidas = fixture_storage.query(outer_filters_in_where=True).all(data)
    assert any(row[1] is None for row in ours)
    assert aiidas and all(row[1] is not None for row in aiidas)
    assert {tuple(row) for row in aiidas} == {tuple(row) for row in ours if row[1] is not None}
    assert fixture_storage.query().all(data) == ours  # the cache keeps the two compilations apart
