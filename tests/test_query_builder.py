"""The front-end QueryBuilder: the query dicts it makes equal aiida's ``as_dict()``, and its result methods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sqlitedos import QueryBuilder
from sqlitedos.exceptions import InputValidationError, MultipleObjectsError, NotExistent
from sqlitedos.query.builder import node_type_filter

FIXTURES = Path(__file__).parent / 'fixtures' / 'aiida-2.9.4'
QUERIES = json.loads((FIXTURES / 'manifest.json').read_text('utf-8'))['queries']


def built(storage, name):
    """The manifest's queries, written with the sqlitedos front end."""
    qb = QueryBuilder(backend=storage)
    if name == 'calc_inputs':
        qb.append(entity_type='process.calculation.calcjob.CalcJobNode.', tag='c', project='uuid')
        qb.append(entity_type='data.Data.', with_outgoing='c', project='uuid', edge_project='label')
        qb.order_by({'c': 'id'})
    elif name == 'count_by_user2_comments':
        qb.append(entity_type='user', tag='u', filters={'email': 'second-public@example.org'})
        qb.append(entity_type='comment', with_user='u', project=['content'])
    elif name == 'group_members':
        qb.append(entity_type='group.core', tag='g', filters={'label': 'group-public-1'})
        qb.append(entity_type='', with_group='g', tag='n', project='uuid')
        qb.order_by({'n': {'id': 'asc'}})
    elif name == 'int_value_gt_0':
        qb.append(
            entity_type='data.core.int.Int.',
            filters={'attributes.value': {'>': 0}},
            project=['uuid', 'attributes.value'],
        )
        qb.order_by({'Int_1': {'id': 'desc'}})
    elif name == 'dict_nested_x_eq_3':
        qb.append(entity_type='data.core.dict.Dict.', filters={'attributes.nested.x': 3}, project='uuid')
        qb.order_by({'Dict_1': 'id'})
    return qb


@pytest.mark.parametrize(
    'name', ['calc_inputs', 'count_by_user2_comments', 'group_members', 'int_value_gt_0', 'dict_nested_x_eq_3']
)
def test_as_dict_equals_aiida(fixture_storage, name):
    qb = built(fixture_storage, name)
    assert qb.as_dict() == QUERIES[name]['queryhelp']
    rows = qb.all()
    expected = QUERIES[name]['result']
    if rows and len(rows[0]) == 1:
        assert qb.all(flat=True) == expected
    else:
        assert sorted(map(json.dumps, rows)) == sorted(map(json.dumps, expected))


def test_from_dict_round_trip(fixture_storage):
    for name, item in QUERIES.items():
        qb = QueryBuilder.from_dict(fixture_storage, item['queryhelp'])
        assert qb.as_dict() == item['queryhelp'], name


def test_type_filters_and_tags(temp_storage):
    assert node_type_filter('data.core.int.Int.') == {'like': 'data.core.int.%'}
    assert node_type_filter('') == {'like': '%'}
    assert node_type_filter('data.core.int.Int.', subclassing=False) == {'==': 'data.core.int.Int.'}
    assert node_type_filter('data.core.code.abstract.AbstractCode.') == {'like': 'data.core.code.%'}
    assert node_type_filter('data.core.my_type.My.') == {'like': 'data.core.my\\_type.%'}
    qb = QueryBuilder(backend=temp_storage)
    qb.append(entity_type=['data.core.int.Int.', 'data.core.float.Float.'])
    qb.append(entity_type='')
    qb.append(entity_type='group.core.auto')
    data = qb.as_dict()
    assert [item['tag'] for item in data['path']] == ['Int-Float_1', 'node_1', 'auto_1']
    assert data['filters']['Int-Float_1'] == {
        'node_type': {'or': [{'like': 'data.core.int.%'}, {'like': 'data.core.float.%'}]}
    }
    assert data['filters']['node_1--auto_1'] == {}
    assert data['path'][2]['joining_keyword'] == 'with_node'
    assert data['filters']['auto_1'] == {'type_string': {'like': 'core.auto%'}}


def test_result_methods(fixture_storage, manifest):
    qb = QueryBuilder(backend=fixture_storage).append(entity_type='data.core.int.Int.', project=['id', 'label'])
    qb.order_by({'Int_1': 'id'})
    count = qb.count()
    assert count == len(qb.all()) > 2
    assert qb.first() == qb.all()[0]
    assert len(list(qb.iterall(batch_size=1))) == count
    assert qb.dict()[0] == {'Int_1': {'id': qb.first()[0], 'label': qb.first()[1]}}
    assert qb.limit(2).offset(1).count() == 2
    with pytest.raises(MultipleObjectsError):
        qb.limit(None).offset(None).one()
    with pytest.raises(NotExistent):
        QueryBuilder(backend=fixture_storage).append(entity_type='', filters={'id': -1}).one()
    label = (
        QueryBuilder(backend=fixture_storage)
        .append(entity_type='', filters={'label': 'label-1'}, project='label')
        .first(flat=True)
    )
    assert label == 'label-1'
    assert 'SELECT' in qb.as_sql() and "'data.core.int.'" in str(qb)  # the subclass filter, as an index range


def test_project_map_and_min(fixture_storage):
    qb = QueryBuilder(backend=fixture_storage).append(
        entity_type='data.core.int.Int.', tag='i', project=['attributes.value']
    )
    qb.set_project_map('i', {'attributes.value': 'value'})
    assert set(qb.dict()[0]['i']) == {'value'}
    values = [row[0] for row in qb.all()]
    qb.add_projection('i', [{'attributes.value': {'func': 'min', 'cast': 'i'}}])
    assert qb.all() == [[min(values)]]
    qb.add_projection('i', [{'attributes.value': {'func': 'max', 'cast': 'i'}}])
    assert qb.all() == [[max(values)]]
    qb.add_projection('i', [{'id': {'func': 'count'}}])
    assert qb.all() == [[len(values)]]


def test_bad_builder_input(temp_storage):
    qb = QueryBuilder(backend=temp_storage).append(entity_type='', tag='n')
    with pytest.raises(InputValidationError, match='with_wrong'):
        qb.append(entity_type='', with_wrong='n')
    with pytest.raises(InputValidationError, match='already used'):
        qb.append(entity_type='', tag='n')
    with pytest.raises(InputValidationError, match='unknown tag'):
        qb.add_filter('nope', {})
    with pytest.raises(InputValidationError, match='limit'):
        qb.limit('3')


def test_import_is_light():
    code = 'import sqlitedos, sys; print(sorted(m for m in ("disk_objectstore", "sqlalchemy", "click") if m in sys.modules))'
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == '[]'


@pytest.mark.parametrize(
    'entity_type, column',
    [
        ('data.core.int.Int.', 'uuid'),
        ('group.core', 'uuid'),
        ('user', 'email'),
        ('computer', 'uuid'),
        ('authinfo', 'enabled'),
        ('comment', 'uuid'),
        ('log', 'uuid'),
    ],
)
def test_star_builds_backend_entities(fixture_storage, entity_type, column):
    query = QueryBuilder(backend=fixture_storage).append(entity_type=entity_type, tag='x', project=['*', 'id', column])
    query.order_by({'x': 'id'})
    rows = query.all()
    assert rows
    for entity, pk, value in rows:
        assert entity.pk == pk == entity.id
        assert getattr(entity, column) == value
    assert query.iterdict().__next__()['x']['*'].pk == rows[0][1]


def test_default_projection_is_last_vertex_star(fixture_storage):
    query = QueryBuilder(backend=fixture_storage).append(entity_type='group.core', tag='g')
    query.append(entity_type='', with_group='g')
    entities = query.all(flat=True)
    assert entities and all(type(entity).__name__ == 'BackendNode' for entity in entities)


def test_from_dict_shares_nothing_with_its_source(temp_storage):
    source = (
        QueryBuilder(backend=temp_storage)
        .append(entity_type='data.core.int.Int.', orm_base='node', tag='n', filters={'attributes.value': {'in': [1]}})
        .as_dict()
    )
    snapshot = json.loads(json.dumps(source))
    rebuilt = QueryBuilder.from_dict(temp_storage, source)
    rebuilt.add_filter('n', {'label': 'x'})
    rebuilt.as_dict(False)['filters']['n']['attributes.value']['in'].append(2)
    assert source == snapshot
    source['filters']['n']['attributes.value']['in'].append(3)
    assert rebuilt.as_dict()['filters']['n']['attributes.value']['in'] == [1, 2]
