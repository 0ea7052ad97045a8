"""Every operator on plain columns and on JSON paths: a table of (filter, expected labels), checked against the SQL
and against each operator's Python twin; plus a handful of golden compiled fragments."""

from __future__ import annotations

import json

import pytest

from sqlitedos.db import Fragment
from sqlitedos.query.compiler import compile_query
from sqlitedos.query.fields import json_path
from sqlitedos.query.operators import MISSING, OPERATORS, JsonRef, like_to_regex

NODES = {
    'n1': {'i': 1, 'f': 1.5, 's': 'Alpha', 'b': True, 'l': [1, 'x', {'k': 2}], 'o': {'k': 'v', 'n': None}, 'z': None},
    'n2': {'i': 2, 'f': 2.0, 's': 'beta', 'b': False, 'l': [], 'o': {}},
    'n3': {'i': 10, 's': 'al_pha%', 'l': ['a', 'b'], 'o': {'k': 1}},
    'n4': {},
}

CASES = [
    ({'attributes.i': 1}, {'n1'}),
    ({'attributes.i': {'==': 2.0}}, {'n2'}),
    ({'attributes.i': {'!==': 1}}, {'n2', 'n3', 'n4'}),
    ({'attributes.b': True}, {'n1'}),
    ({'attributes.b': {'!==': True}}, {'n2', 'n3', 'n4'}),
    ({'attributes.l': {'==': [1, 'x', {'k': 2}]}}, {'n1'}),
    ({'attributes.o': {'==': {'n': None, 'k': 'v'}}}, {'n1'}),
    ({'attributes.i': {'>': 1}}, {'n2', 'n3'}),
    ({'attributes.i': {'>=': 2, '<': 10}}, {'n2'}),
    ({'attributes.i': {'=>': 2, '=<': 2}}, {'n2'}),
    ({'attributes.f': {'<=': 1.5}}, {'n1'}),
    ({'attributes.s': {'>': 'b'}}, {'n2'}),
    ({'attributes.s': {'like': 'al%'}}, {'n3'}),
    ({'attributes.s': {'like': 'al\\_pha\\%'}}, {'n3'}),
    ({'attributes.s': {'ilike': 'AL%'}}, {'n1', 'n3'}),
    ({'attributes.s': {'!like': 'al%'}}, {'n1', 'n2', 'n4'}),
    ({'attributes.i': {'in': [1, 10]}}, {'n1', 'n3'}),
    ({'attributes.s': {'in': ['beta', 1]}}, {'n2'}),
    ({'attributes.b': {'in': [False]}}, {'n2'}),
    ({'attributes.i': {'!in': [1]}}, {'n2', 'n3', 'n4'}),
    ({'attributes.l': {'of_type': 'array'}}, {'n1', 'n2', 'n3'}),
    # A missing path is null for of_type, as in both aiida backends (aiida's PostgreSQL code does it on purpose).
    ({'attributes.z': {'of_type': 'null'}}, {'n1', 'n2', 'n3', 'n4'}),
    ({'attributes.s': {'of_type': 'null'}}, {'n4'}),
    ({'attributes.z': {'!of_type': 'null'}}, set()),
    ({'attributes.s': {'!of_type': 'null'}}, {'n1', 'n2', 'n3'}),
    ({'attributes.f': {'of_type': 'number'}}, {'n1', 'n2'}),
    ({'attributes.o': {'of_type': 'object'}}, {'n1', 'n2', 'n3'}),
    ({'attributes.s': {'of_type': 'string'}}, {'n1', 'n2', 'n3'}),
    ({'attributes.b': {'of_type': 'boolean'}}, {'n1', 'n2'}),
    ({'attributes.l': {'contains': [1]}}, {'n1'}),
    ({'attributes.l': {'contains': [{'k': 2}]}}, {'n1'}),
    ({'attributes.l': {'contains': []}}, {'n1', 'n2', 'n3'}),
    ({'attributes.l': {'!contains': ['a']}}, {'n1', 'n2'}),
    ({'attributes': {'contains': {'o': {'k': 1}}}}, {'n3'}),
    ({'attributes.o': {'has_key': 'k'}}, {'n1', 'n3'}),
    ({'attributes.l': {'has_key': 'x'}}, {'n1'}),
    ({'attributes.o': {'!has_key': 'k'}}, {'n2'}),
    ({'attributes.l': {'of_length': 2}}, {'n3'}),
    ({'attributes.l': {'longer': 1}}, {'n1', 'n3'}),
    ({'attributes.l': {'shorter': 1}}, {'n2'}),
    ({'attributes.l.1': 'x'}, {'n1'}),
    ({'attributes.l.2.k': 2}, {'n1'}),
    ({'attributes.i': {'or': [{'==': 1}, {'>': 5}]}}, {'n1', 'n3'}),
    ({'attributes.i': {'and': [{'>': 0}, {'<': 5}]}}, {'n1', 'n2'}),
    ({'attributes.i': {'~or': [{'==': 1}, {'==': 2}]}}, {'n3', 'n4'}),
    ({'or': [{'attributes.i': 1}, {'label': 'n4'}]}, {'n1', 'n4'}),
    ({'~and': [{'attributes.i': {'>': 0}}, {'attributes.i': {'<': 5}}]}, {'n3', 'n4'}),
    ({'!or': [{'label': 'n1'}, {'label': 'n2'}]}, {'n3', 'n4'}),
    ({'label': {'in': ['n1', 'n3']}}, {'n1', 'n3'}),
    ({'label': {'like': 'n_'}}, {'n1', 'n2', 'n3', 'n4'}),
    ({'label': {'ilike': 'N1'}}, {'n1'}),
    ({'label': {'of_length': 2}}, {'n1', 'n2', 'n3', 'n4'}),
    ({'label': {'longer': 2}}, set()),
    ({'description': {'shorter': 1}}, {'n1', 'n2', 'n3', 'n4'}),
    ({'label': {'>': 'n2', '<=': 'n3'}}, {'n3'}),
    ({'process_type': None}, {'n1', 'n2', 'n3', 'n4'}),
    ({'process_type': {'!==': 'x'}}, set()),
]


@pytest.fixture
def filled(temp_storage):
    connection = temp_storage.get_session()
    user = connection.execute(
        "INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ('o@x', '', '', '') RETURNING id"
    ).fetchone()[0]
    for label, attributes in NODES.items():
        connection.execute(
            'INSERT INTO db_dbnode (uuid, node_type, label, description, ctime, mtime, attributes, extras, '
            "repository_metadata, user_id) VALUES (?, '', ?, '', '2026-01-01 00:00:00.000000', "
            "'2026-01-01 00:00:00.000000', ?, '{}', '{}', ?)",
            (label, label, json.dumps(attributes), user),
        )
    return temp_storage


def query(spec):
    return {
        'path': [{'entity_type': '', 'orm_base': 'node', 'tag': 'n'}],
        'filters': {'n': spec},
        'project': {'n': ['label']},
    }


@pytest.mark.parametrize('spec, expected', CASES, ids=[json.dumps(case[0]) for case in CASES])
def test_operator_sql(filled, spec, expected):
    assert {row[0] for row in filled.query().all(query(spec))} == expected


@pytest.mark.parametrize(
    'spec, expected',
    [
        case
        for case in CASES
        if len(case[0]) == 1
        and 'attributes' in next(iter(case[0]))
        and isinstance(next(iter(case[0].values())), dict)
        and len(next(iter(case[0].values()))) == 1
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else '',
)
def test_operator_twin(spec, expected):
    ((field, ops),) = spec.items()
    ((name, value),) = ops.items()
    negate = name[0] in '!~'
    base = name[1:] if negate else name
    if base in ('and', 'or'):
        pytest.skip('combinations are covered by the property test')
    selected = set()
    for label, attributes in NODES.items():
        stored = attributes
        for component in field.split('.')[1:]:
            if isinstance(stored, list) and component.isdigit():
                stored = stored[int(component)] if int(component) < len(stored) else MISSING
            elif isinstance(stored, dict):
                stored = stored.get(component, MISSING)
            else:
                stored = MISSING
        result = OPERATORS[base].matches(stored, value, True)
        if result is not None and (not result if negate else result):
            selected.add(label)
    assert selected == expected


def test_every_operator_is_covered():
    used = {name.lstrip('!~') for spec, _ in CASES for ops in spec.values() if isinstance(ops, dict) for name in ops}
    assert set(OPERATORS) <= used


def test_golden_fragments():
    """A handful of exact compilations (the shapes the docs describe)."""
    ref = JsonRef('t0."attributes"', Fragment('?', ('$."a"',)))
    assert OPERATORS['=='].on_json(ref, 'x') == Fragment(
        '(json_extract(t0."attributes", ?) = ? AND ifnull(json_type(t0."attributes", ?), \'\') IN (\'text\'))',
        ('$."a"', 'x', '$."a"'),
    )
    assert OPERATORS['in'].on_column('t0."id"', 'int', [1, 2]) == Fragment(
        't0."id" IN (SELECT value FROM json_each(?))', ('[1, 2]',)
    )
    assert OPERATORS['=='].on_column('t0."process_type"', 'text', None) == Fragment('t0."process_type" IS NULL')
    assert json_path(['a', 'b'], 'c', 'n') == Fragment('?', ('$."a"."b"',))
    compiled = compile_query(query({'label': 'x'}))
    assert compiled.sql == 'SELECT t0."label" FROM "db_dbnode" AS t0 WHERE t0."label" = ?'
    assert compiled.params == ('x',)


def test_like_twin_escapes():
    assert like_to_regex('a\\%b%').fullmatch('a%bcd')
    assert not like_to_regex('a\\%b%').fullmatch('axbcd')
    assert like_to_regex('A_', ignore_case=True).fullmatch('ab')


@pytest.mark.parametrize(
    ('container', 'contained', 'expected'),
    [
        ([1, 2], 1, 1),  # a top-level array contains a primitive element
        ([[1, 0], [0, 2]], [2], 0),  # below the top a primitive does not match an array (aiida's PostgreSQL test)
        ([[1, 0], [0, 2]], [[2]], 1),
        ({'a': [1, 2]}, {'a': 1}, 0),
        ({'a': [1, 2]}, {'a': [1]}, 1),
        ([True], [1], 0),
    ],
)
def test_json_contains_follows_postgresql(container: object, contained: object, expected: int) -> None:
    """``contains`` is PostgreSQL's jsonb ``@>``, whose primitive-in-array exception holds at the top level only."""
    from sqlitedos.db import encode_json, json_contains

    assert json_contains(encode_json(container), encode_json(contained)) == expected
