"""Differential property: on random small graphs and random filter dicts, the compiled SQL selects exactly the rows
that the operators' Python twins (``Operator.matches``) select."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlitedos.db import encode_json
from sqlitedos.query.operators import MISSING, OPERATORS
from tests.querydicts import node_query

INSERT_NODE = (
    'INSERT INTO db_dbnode (id, uuid, node_type, process_type, label, description, ctime, mtime, attributes, extras, '
    "repository_metadata, user_id) VALUES (?, ?, 'data.core.dict.Dict.', ?, ?, '', ?, ?, ?, '{}', '{}', ?)"
)
INSERT_LINK = 'INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (?, ?, ?, ?)'
TS = '2026-01-01 00:00:00.000000'

KEYS = ['a', 'b', '0']
TEXT = st.text(alphabet='aAb%_\\é1', max_size=4)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.5, 1.0, -2.5]), TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS), children, max_size=3)
    ),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(st.sampled_from(KEYS), JSON_VALUES, max_size=3)
JSON_FIELDS = ['attributes.a', 'attributes.b', 'attributes.a.0', 'attributes.a.b', 'attributes.0', 'attributes']
COLUMN_FIELDS = ['label', 'id', 'process_type']


def column_value(field: str) -> st.SearchStrategy:
    return st.integers(0, 6) if field == 'id' else TEXT


def operator_value(name: str, on_json: bool, field: str) -> st.SearchStrategy:
    if name in ('like', 'ilike'):
        # A pattern ending in an odd number of escape characters is refused (tests/test_query_bad_input.py).
        return TEXT.filter(lambda text: (len(text) - len(text.rstrip('\\'))) % 2 == 0)
    if name == 'has_key':
        return TEXT
    if name == 'in':
        items = JSON_VALUES.filter(lambda v: v is not None) if on_json else st.one_of(column_value(field), st.none())
        return st.lists(items, min_size=1, max_size=3)
    if name == 'of_type':
        return st.sampled_from(['object', 'array', 'string', 'number', 'boolean', 'null'])
    if name in ('of_length', 'longer', 'shorter'):
        return st.integers(0, 3)
    if name == 'contains':
        return JSON_VALUES
    if name == '==':
        return JSON_VALUES if on_json else st.one_of(column_value(field), st.none())
    if on_json:
        return st.one_of(st.booleans(), st.integers(-5, 5), st.sampled_from([0.5, -2.5]), TEXT)
    return column_value(field)


@st.composite
def field_filter(draw) -> tuple[str, dict]:
    on_json = draw(st.booleans())
    field = draw(st.sampled_from(JSON_FIELDS if on_json else COLUMN_FIELDS))
    names = [name for name, row in OPERATORS.items() if (row.on_json if on_json else row.on_column)]
    if not on_json and field != 'label':
        names = [name for name in names if name not in ('of_length', 'longer', 'shorter', 'like', 'ilike')]
    ops = {}
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(names))
        value = draw(operator_value(name, on_json, field))
        prefix = draw(st.sampled_from(['', '', '!', '~']))
        if draw(st.integers(0, 5)) == 0:
            other = draw(operator_value(name, on_json, field))
            ops[f'{prefix}{draw(st.sampled_from(["or", "and"]))}'] = [{name: value}, {name: other}]
        else:
            ops[prefix + name] = value
    return field, ops


FILTERS = st.recursive(
    field_filter().map(lambda pair: {pair[0]: pair[1]}),
    lambda children: st.builds(
        lambda key, subs: {key: subs},
        st.sampled_from(['and', 'or', '~and', '!or']),
        st.lists(children, min_size=1, max_size=2),
    ),
    max_leaves=3,
)


# --- the Python side ------------------------------------------------------------------------------------------------


def value_at(row: dict, field: str) -> tuple[Any, bool]:
    head, *rest = field.split('.')
    if head != 'attributes':
        return row[head], False
    current: Any = row['attributes']
    for component in rest:
        if isinstance(current, list) and component.isdigit():
            index = int(component)
            current = current[index] if index < len(current) else MISSING
        elif isinstance(current, dict):
            current = current.get(component, MISSING)
        else:
            current = MISSING
        if current is MISSING:
            break
    return current, True


def and3(values: list) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def or3(values: list) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def not3(value: bool | None) -> bool | None:
    return None if value is None else not value


def eval_ops(stored: Any, on_json: bool, ops: dict) -> bool | None:
    results = []
    for key, value in ops.items():
        negate = key[0] in '!~'
        name = key[1:] if negate else key
        if name in ('and', 'or'):
            subs = [eval_ops(stored, on_json, sub) for sub in value]
            result = and3(subs) if name == 'and' else or3(subs)
        else:
            result = OPERATORS[name].matches(stored, value, on_json)
        results.append(not3(result) if negate else result)
    return and3(results)


def eval_spec(row: dict, spec: dict) -> bool | None:
    results = []
    for key, value in spec.items():
        if key in ('and', 'or', '~and', '!or'):
            subs = [eval_spec(row, sub) for sub in value]
            result = and3(subs) if key.endswith('and') else or3(subs)
            results.append(not3(result) if key[0] in '~!' else result)
        else:
            stored, on_json = value_at(row, key)
            results.append(eval_ops(stored, on_json, value))
    return and3(results)


def query(spec: dict) -> dict:
    return node_query(spec, [{'id': {}}])


@pytest.fixture(scope='module')
def module_storage(tmp_path_factory):
    from sqlitedos import SqliteTempBackend

    storage = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path_factory.mktemp('prop'))))
    storage.get_session().execute(
        "INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ('prop@example.org', '', '', '')"
    )
    yield storage
    storage.close()


def load(storage, nodes: list[dict]) -> list[dict]:
    connection = storage.get_session()
    connection.execute('DELETE FROM db_dblink')
    connection.execute('DELETE FROM db_dbnode')
    user = connection.execute('SELECT min(id) FROM db_dbuser').fetchone()[0]
    rows = []
    for index, node in enumerate(nodes, start=1):
        row = {
            'id': index,
            'label': node['label'],
            'process_type': node['process_type'],
            'attributes': node['attributes'],
        }
        connection.execute(
            INSERT_NODE,
            (
                index,
                f'uuid-{index}',
                node['process_type'],
                node['label'],
                TS,
                TS,
                encode_json(node['attributes']),
                user,
            ),
        )
        rows.append(row)
    return rows


NODES = st.lists(
    st.fixed_dictionaries({'label': TEXT, 'process_type': st.one_of(st.none(), TEXT), 'attributes': ATTRIBUTES}),
    min_size=3,
    max_size=6,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nodes=NODES, spec=FILTERS)
def test_sql_equals_python_twins(module_storage, nodes, spec):
    rows = load(module_storage, nodes)
    got = sorted(row[0] for row in module_storage.query().iterall(query(spec)))
    expected = sorted(row['id'] for row in rows if eval_spec(row, spec) is True)
    assert got == expected, (json.dumps(spec), module_storage.query().as_sql(query(spec), inline=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(2, 7),
    edges=st.lists(
        st.tuples(st.integers(1, 7), st.integers(1, 7), st.sampled_from(['create', 'input_calc', 'return'])),
        max_size=10,
    ),
)
def test_descendants_equal_python_closure(module_storage, n, edges):
    load(module_storage, [{'label': '', 'process_type': None, 'attributes': {}} for _ in range(n)])
    links = [(a, b, kind) for a, b, kind in edges if a < b <= n]  # acyclic, like aiida's provenance graph
    connection = module_storage.get_session()
    connection.executemany(INSERT_LINK, [(a, b, 'l', kind) for a, b, kind in links])
    followed = [(a, b) for a, b, kind in links if kind != 'return']
    for root in range(1, n + 1):
        reach, frontier, depth_of = set(), {root}, {}
        depth = 0
        while frontier:
            frontier = {b for a, b in followed if a in frontier}
            for node in frontier:
                depth_of.setdefault(node, depth)
            reach |= frontier
            depth += 1
        data = query({'id': root})
        data['path'].append(
            {
                'entity_type': '',
                'orm_base': 'node',
                'tag': 'd',
                'joining_keyword': 'with_ancestors',
                'joining_value': 'n',
                'edge_tag': 'n--d',
                'outerjoin': False,
            }
        )
        data['project'] = {'n': [], 'd': ['id'], 'n--d': [{'depth': {'func': 'min'}}]}
        data['filters']['d'] = {}
        data['distinct'] = True
        data['project']['n--d'] = []
        assert {row[0] for row in module_storage.query().all(data)} == reach
        ancestors = dict(data, path=[data['path'][0], dict(data['path'][1], joining_keyword='with_descendants')])
        expected_up = {a for a in range(1, n + 1) if root in _closure(followed, a)}
        assert {row[0] for row in module_storage.query().all(ancestors)} == expected_up


def _closure(edges: list[tuple[int, int]], start: int) -> set[int]:
    seen, frontier = set(), {start}
    while frontier:
        frontier = {b for a, b in edges if a in frontier} - seen
        seen |= frontier
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 6),
    edges=st.lists(
        st.tuples(
            st.integers(1, 6), st.integers(1, 6), st.sampled_from(['x', 'y']), st.sampled_from(['create', 'input_calc'])
        ),
        max_size=8,
    ),
    keyword=st.sampled_from(['with_incoming', 'with_outgoing']),
    outer=st.booleans(),
    label=st.sampled_from([None, 'x']),
    target_max=st.sampled_from([None, 3]),
)
def test_link_joins_equal_python(module_storage, n, edges, keyword, outer, label, target_max):
    """Link joins with edge filters, vertex filters and outer joins against a Python nested loop."""
    load(module_storage, [{'label': '', 'process_type': None, 'attributes': {}} for _ in range(n)])
    links = [(a, b, lab, kind) for a, b, lab, kind in edges if a <= n and b <= n]
    module_storage.get_session().executemany(INSERT_LINK, [(a, b, lab, kind) for a, b, lab, kind in links])
    data = query({})
    data['path'].append(
        {
            'entity_type': '',
            'orm_base': 'node',
            'tag': 'm',
            'joining_keyword': keyword,
            'joining_value': 'n',
            'edge_tag': 'n--m',
            'outerjoin': outer,
        }
    )
    data['filters'] = {
        'n': {},
        'm': {'id': {'<=': target_max}} if target_max else {},
        'n--m': {'label': label} if label else {},
    }
    data['project'] = {'n': ['id'], 'm': ['id'], 'n--m': ['label']}
    got = sorted(module_storage.query().all(data), key=repr)
    expected = []
    for first in range(1, n + 1):
        matched = []
        for a, b, lab, _ in links:
            mine, other = (a, b) if keyword == 'with_incoming' else (b, a)
            if mine == first and (label is None or lab == label) and (target_max is None or other <= target_max):
                matched.append([first, other, lab])
        expected.extend(matched or ([[first, None, None]] if outer else []))
    assert got == sorted(expected, key=repr)
