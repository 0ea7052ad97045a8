"""Bad query dicts raise InputValidationError naming the offending part, before any SQL runs."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlitedos.exceptions import InputValidationError
from sqlitedos.query.operators import OPERATORS
from tests.querydicts import node_query

base = node_query


def joined(keyword='with_incoming', orm_base='node', **edge):
    data = base()
    data['path'].append(
        {
            'entity_type': '',
            'orm_base': orm_base,
            'tag': 'm',
            'joining_keyword': keyword,
            'joining_value': 'n',
            'edge_tag': 'n--m',
            'outerjoin': False,
        }
    )
    data['filters']['n--m'] = edge.get('filters', {})
    data['project']['n--m'] = edge.get('project', [])
    return data


INJECTIONS = ['label"; DROP TABLE db_dbnode; --', "label' OR '1'='1", 'label--', 'label[0]', 'id; SELECT 1']
JSON_INJECTIONS = ['a"b', "a'b", 'a;b', 'a--b', 'a[0]', 'a]', 'a\\b', 'a$']

CASES = {
    'unknown operator': (base({'label': {'is': 'x'}}), "'is'"),
    'unknown operator on json': (base({'attributes.x': {'foo': 1}}), "'foo'"),
    'unknown negated operator': (base({'label': {'!nope': 1}}), "'!nope'"),
    'unknown field': (base({'colour': 'red'}), "'colour'"),
    'unknown projection': (base(project=['colour']), "'colour'"),
    'unknown tag in filters': (dict(base(), filters={'zz': {}}), "'zz'"),
    'unknown tag in project': (dict(base(), project={'zz': ['id']}), "'zz'"),
    'unknown tag in order_by': (base(order_by=[{'zz': [{'id': {'order': 'asc'}}]}]), "'zz'"),
    'unknown query key': (base(colour=1), 'colour'),
    'unknown join keyword': (joined('with_friend'), "'with_friend'"),
    'keyword for the wrong entity': (joined('with_node', orm_base='node'), "'with_node'"),
    'keyword to the wrong target': (joined('with_user', orm_base='node'), "'with_user'"),
    'unknown orm_base': (joined(orm_base='planet'), "'planet'"),
    'empty in': (base({'id': {'in': []}}), "'in'"),
    'empty in on json': (base({'attributes.x': {'in': []}}), "'in'"),
    'in with a str': (base({'id': {'in': 'abc'}}), "'in'"),
    'like with an int': (base({'label': {'like': 3}}), "'like'"),
    'like ending in the escape character': (base({'label': {'like': 'ab\\'}}), "'like'"),
    'ilike ending in the escape character on json': (base({'attributes.x': {'ilike': '\\\\\\'}}), "'ilike'"),
    'of_length with a str': (base({'attributes.x': {'of_length': 'a'}}), "'of_length'"),
    'of_type unknown': (base({'attributes.x': {'of_type': 'float'}}), "'of_type'"),
    'has_key on a column': (base({'label': {'has_key': 'a'}}), "'has_key'"),
    'contains on a column': (base({'label': {'contains': ['a']}}), "'contains'"),
    'datetime column with str': (base({'ctime': {'>': '2020-01-01'}}), "'>'"),
    'compare with a list': (base({'attributes.x': {'<': [1]}}), "'<'"),
    'json path on a text column': (base({'label.x': 1}), "'label.x'"),
    'unknown func': (base(project=[{'id': {'func': 'sum'}}]), "'sum'"),
    'unknown cast': (base(project=[{'attributes.x': {'cast': 'q'}}]), "'q'"),
    'projected twice': (base(project=['id', 'id']), "'id'"),
    'limit not int': (base(limit='5'), 'limit'),
    'limit beyond 64 bits': (base(limit=2**63), 'limit'),
    'offset beyond 64 bits': (base(offset=2**63), 'offset'),
    'negative offset': (base(offset=-1), 'offset'),
    'edge filter on fk join': (joined('with_user', orm_base='user'), None),
    'tag with --': (dict(base(), path=[dict(base()['path'][0], tag='a--b')]), "'a--b'"),
    'bad logical value': (base({'or': 'x'}), "'or'"),
    'and operator not a list': (base({'id': {'and': 3}}), "'and'"),
    'bad order': (base(order_by=[{'n': [{'id': {'order': 'sideways'}}]}]), "'sideways'"),
}
for index, name in enumerate(INJECTIONS):
    CASES[f'injected field {index}'] = (base({name: 1}), repr(name.split('.')[0])[:8])
    CASES[f'injected projection {index}'] = (base(project=[name]), repr(name)[:8])
    CASES[f'injected order {index}'] = (base(order_by=[{'n': [{name: {'order': 'asc'}}]}]), repr(name)[:8])
for index, key in enumerate(JSON_INJECTIONS):
    CASES[f'injected json key {index}'] = (base({f'attributes.{key}': 1}), repr(key)[:4])
    CASES[f'injected json projection {index}'] = (base(project=[f'extras.{key}']), repr(key)[:4])


def _edge_fixup():
    data = joined('with_node', orm_base='user', filters={'id': 1})
    data['path'][1]['entity_type'] = 'user'
    data['path'][0]['orm_base'] = 'node'
    CASES['edge filter on fk join'] = (data, "'n--m'")


_edge_fixup()


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input_raises_before_running(temp_storage, name):
    data, fragment = CASES[name]
    original = copy.deepcopy(data)
    statements = []
    connection = temp_storage.get_session()
    connection.set_trace_callback(statements.append)
    try:
        for method in ('iterall', 'count', 'as_sql', 'first'):
            with pytest.raises(InputValidationError) as info:
                result = getattr(temp_storage.query(), method)(data)
                if method == 'iterall':
                    list(result)
            if fragment:
                assert fragment in str(info.value), str(info.value)
    finally:
        connection.set_trace_callback(None)
    assert statements == []
    assert data == original
    assert connection.execute("SELECT count(*) FROM sqlite_master WHERE name = 'db_dbnode'").fetchone() == (1,)


@pytest.mark.parametrize(
    'spec', [{'id': 2**64}, {'attributes.x': {'>': -(2**70)}}, {'attributes.x': {'of_length': 2**63}}]
)
def test_integers_beyond_64_bits(temp_storage, spec):
    with pytest.raises(InputValidationError, match='64 bits'):
        temp_storage.query().count(base(spec))


@pytest.mark.parametrize('name', sorted(CASES))
def test_bad_input_is_refused_by_the_parser(name):
    """Every check happens once, where the dict is parsed: the compiler and the backend trust what they get."""
    from sqlitedos.query.parse import parse_query

    data, fragment = CASES[name]
    with pytest.raises(InputValidationError) as info:
        parse_query(data)
    if fragment:
        assert fragment in str(info.value), str(info.value)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.lists(st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=2), st.booleans()), max_size=3),
    st.dictionaries(st.sampled_from(['a', 'b']), st.integers(-3, 3), max_size=2),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(['id', 'label', 'ctime', 'process_type', 'uuid', 'attributes.x', 'attributes.a.0', 'extras']),
    operator=st.sampled_from(sorted(OPERATORS)),
    negate=st.booleans(),
    value=_VALUES,
)
def test_what_the_parser_accepts_compiles_and_runs(temp_storage, field, operator, negate, value):
    """The parser is the only place that refuses: a dict it accepts compiles and runs without an error."""
    from sqlitedos.query.compiler import compile_query
    from sqlitedos.query.parse import parse_query

    data = base({field: {('!' if negate else '') + operator: value}})
    try:
        parsed = parse_query(data)
    except InputValidationError:
        return
    compiled = compile_query(parsed)
    temp_storage.get_session().execute(compiled.sql, compiled.params).fetchall()
