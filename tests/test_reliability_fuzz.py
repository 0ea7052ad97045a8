"""Hostile input, fuzzed: each call works, or raises an exception of ``sqlitedos.exceptions`` (or ``TypeError`` /
``ValueError`` where aiida does), never a bare ``sqlite3`` error or a crash; a refused call changes nothing stored."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlitedos import LinkType
from sqlitedos.archive import import_archive
from sqlitedos.exceptions import AiidaException
from tests.querydicts import node_query
from tests.test_query_property import FILTERS, eval_spec

ALLOWED = (AiidaException, TypeError, ValueError)
# Duplicate zip member names are part of the hostile input; huge generated values make hypothesis warn about reprs.
pytestmark = pytest.mark.filterwarnings(
    'ignore:Duplicate name:UserWarning', 'ignore::hypothesis.errors.HypothesisWarning'
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DATA_TYPE = 'data.core.dict.Dict.'
CALC_TYPE = 'process.calculation.calcfunction.CalcFunctionNode.'

#: Text of any code point, lone surrogates and NUL included.
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=12)
huge_text = st.sampled_from(['x' * 100_000, '\x00' * 1000, '\ud800' * 1000, 'é' * 50_000])
odd_scalars = st.sampled_from(
    [
        float('nan'),
        float('inf'),
        2**63,
        -(2**63) - 1,
        10**40,
        b'bytes',
        complex(1, 2),
        {1, 2},
        (1, 2),
        object(),
        dt.datetime(2020, 1, 1),
        None,
        True,
        1.5e308,
        -0.0,
    ]
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text | huge_text | odd_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text | st.integers(), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    'id',
    'uuid',
    'label',
    'node_type',
    'ctime',
    'attributes',
    'attributes.a',
    'attributes.a.b',
    'extras.x',
    'attributes.0',
    'description',
    'user_id',
    'repository_metadata',
    'nope',
    '',
]
OPERATORS = [
    '==',
    'in',
    '!in',
    'like',
    'ilike',
    '>',
    '<',
    '>=',
    '<=',
    '=>',
    '=<',
    'of_type',
    'has_key',
    'contains',
    'shorter',
    'longer',
    'of_length',
    '!==',
    '~like',
    'and',
    'or',
    '!and',
    'nope',
]
operator_dicts = st.dictionaries(st.sampled_from(OPERATORS) | any_text, values, max_size=3)
filters = st.recursive(
    st.dictionaries(st.sampled_from(FIELDS) | any_text, values | operator_dicts, max_size=3),
    lambda inner: (
        st.dictionaries(st.sampled_from(['and', 'or', '!and', '~or']), st.lists(inner, max_size=3), max_size=2)
        | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=2)
    ),
    max_leaves=6,
)
projections = st.lists(
    st.sampled_from(FIELDS + ['*', '**'])
    | any_text
    | st.dictionaries(
        st.sampled_from(FIELDS), st.dictionaries(st.sampled_from(['cast', 'func', 'x']), values, max_size=2), max_size=1
    ),
    max_size=3,
)


def dump(storage: Any) -> list[str]:
    return list(storage.get_session().iterdump())


def attempt(storage: Any, action: Callable[[], Any]) -> bool:
    """Run ``action``: True if it worked; on an allowed refusal check that nothing stored changed."""
    before = dump(storage)
    try:
        action()
    except ALLOWED:
        assert dump(storage) == before
        return False
    return True


@pytest.fixture
def seeded(storage: Any) -> Any:
    """A storage with a few nodes (labels and attributes in the shapes the well-formed filters test), a link and a
    group to hit."""
    data = storage.nodes.create(node_type=DATA_TYPE, user=storage.default_user, label='d')
    data.set_attribute('a', {'b': [1, 'two', None]})
    data.store()
    calc = storage.nodes.create(node_type=CALC_TYPE, user=storage.default_user, label='c').store()
    calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    for label, attributes in SEED_NODES:
        node = storage.nodes.create(node_type=DATA_TYPE, user=storage.default_user, label=label)
        node.set_attribute_many(attributes)
        node.store()
    storage.groups.create(label='g', user=storage.default_user).store()
    return storage


#: More nodes for the well-formed queries to tell apart (labels and keys from ``test_query_property``'s alphabet).
SEED_NODES = [
    ('a%', {'a': 1, 'b': 'A'}),
    ('Ab', {'a': [1, 'a'], '0': None}),
    ('é1', {'b': {'a': 0.5}, 'a': True}),
    ('', {'a': -2.5, 'b': [None, {'a': 'é'}]}),
    ('b_\\', {'0': 'aAb', 'a': {'0': 3, 'b': []}}),
]


def twin_rows(storage: Any) -> list[dict[str, Any]]:
    """The seeded nodes as the Python twins of ``test_query_property`` see them."""
    cursor = storage.get_session().execute('SELECT id, label, process_type, attributes FROM db_dbnode')
    return [
        {'id': pk, 'label': label, 'process_type': process, 'attributes': json.loads(attributes)}
        for pk, label, process, attributes in cursor
    ]


class Tally:
    """How many generated queries were tried, answered, and checked (against the Python twins or their count)."""

    def __init__(self) -> None:
        self.tried = self.answered = self.checked = 0

    def assert_real_fraction(self, minimum: float) -> None:
        assert self.tried >= 50, vars(self)
        assert self.answered >= minimum * self.tried, vars(self)
        assert self.checked >= minimum * self.tried, vars(self)


def check_twin(storage: Any, spec: dict[str, Any], tally: Tally) -> None:
    """A well-formed filter must be answered, and exactly as the operators' Python twins answer it."""
    tally.tried += 1
    query = node_query(spec, ['id'])
    got = sorted(row[0] for row in storage.query().iterall(query))
    expected = sorted(row['id'] for row in twin_rows(storage) if eval_spec(row, spec) is True)
    assert got == expected, json.dumps(spec)
    assert storage.query().count(query) == len(expected)
    tally.answered += 1
    tally.checked += 1


def run_hostile(storage: Any, query: dict[str, Any], tally: Tally) -> None:
    """A hostile query: refused cleanly, or answered with as many rows as its count says."""
    tally.tried += 1
    results: list[Any] = []
    if attempt(storage, lambda: results.append(storage.query().count(query))):
        tally.answered += 1
        if attempt(storage, lambda: results.append(list(storage.query().iterall(query, batch_size=2)))):
            if not query.get('limit') and not query.get('offset') and not query.get('distinct'):
                assert results[0] == len(results[1]), query
                tally.checked += 1


def test_query_dicts(seeded: Any) -> None:
    """Hostile filters, projections and options, mixed half and half with well-formed filters (checked against the
    Python twins): a real fraction must be answered, and answered right."""
    tally = Tally()

    @FUZZ
    @given(
        case=st.tuples(st.just('twin'), FILTERS)
        | st.tuples(
            st.just('hostile'),
            st.tuples(
                filters,
                projections,
                st.dictionaries(
                    st.sampled_from(['limit', 'offset', 'distinct', 'order_by', 'nope']), values, max_size=2
                ),
            ),
        )
    )
    def run(case: tuple[str, Any]) -> None:
        kind, spec = case
        if kind == 'twin':
            check_twin(seeded, spec, tally)
            return
        node_filters, project, extra = spec
        run_hostile(seeded, {**node_query(node_filters, project), **extra}, tally)

    run()
    tally.assert_real_fraction(0.4)


def test_query_dicts_of_any_shape(seeded: Any) -> None:
    """Top-level dicts of any shape, mixed with whole well-formed query dicts: the well-formed ones are answered
    right, the others refused cleanly or answered consistently."""
    tally = Tally()

    @FUZZ
    @given(
        case=st.tuples(st.just('twin'), FILTERS)
        | st.tuples(
            st.just('hostile'),
            st.dictionaries(
                st.sampled_from(['path', 'filters', 'project', 'order_by', 'limit']) | any_text, values, max_size=4
            ),
        )
    )
    def run(case: tuple[str, Any]) -> None:
        kind, spec = case
        if kind == 'twin':
            check_twin(seeded, spec, tally)
        else:
            run_hostile(seeded, spec, tally)

    run()
    tally.assert_real_fraction(0.4)


@FUZZ
@given(key=any_text | st.integers() | st.none(), value=values, extra=values)
def test_attribute_and_extra_values(seeded: Any, key: Any, value: Any, extra: Any) -> None:
    node = seeded.nodes.create(node_type=DATA_TYPE, user=seeded.default_user)

    def store() -> None:
        node.set_attribute(key, value)
        node.set_extra('e', extra)
        node.store()

    if attempt(seeded, store):
        stored = seeded.nodes.get(pk=node.pk)
        assert set(stored.attributes) == {key}
        attempt(seeded, lambda: stored.set_extra(key, value))


@FUZZ
@given(link_label=any_text | huge_text | st.integers(), group_label=any_text | huge_text | st.none())
def test_link_and_group_labels(seeded: Any, link_label: Any, group_label: Any) -> None:
    source = seeded.nodes.create(node_type=DATA_TYPE, user=seeded.default_user).store()
    target = seeded.nodes.create(node_type=CALC_TYPE, user=seeded.default_user).store()
    attempt(seeded, lambda: target.add_incoming(source, LinkType.INPUT_CALC, link_label))
    attempt(seeded, lambda: seeded.groups.create(label=group_label, user=seeded.default_user).store())


@FUZZ
@given(
    paths=st.lists(
        any_text | st.sampled_from(['../x', '/abs', 'a//b', 'a/./b', '.', 'a/', '\x00', 'a\\b']), min_size=1, max_size=4
    )
)
def test_file_paths_in_a_node_tree(seeded: Any, paths: list[str]) -> None:
    node = seeded.nodes.create(node_type='data.core.folder.FolderData.', user=seeded.default_user)
    accepted = []
    for path in paths:
        try:
            node.repository.put_object_from_bytes(path.encode('utf-8', 'surrogatepass'), path)
        except (*ALLOWED, IsADirectoryError, NotADirectoryError):  # aiida's repository raises these two too
            continue
        accepted.append(path)
    if attempt(seeded, node.store):
        stored = seeded.nodes.get(pk=node.pk)
        for path in accepted:
            if stored.repository.has_object(path) and stored.repository.get_object(path).file_type.name == 'FILE':
                assert stored.repository.get_object_content(path, 'rb')


ODD_NAMES = [
    '../escape.txt',
    '/absolute',
    'repo/../../up',
    'repo/' + 'a' * 64,
    'repo/' + '0' * 64,
    'db.sqlite3/',
    'metadata.json/x',
    'repo/\x00',
    'repo/',
    'repo/ab/cd',
    '\u202e',
    'ü' * 100,
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    members=st.lists(
        st.tuples(st.sampled_from(ODD_NAMES) | any_text.filter(bool), st.binary(max_size=64)), min_size=1, max_size=4
    ),
    replace=st.booleans(),
)
def test_archive_members_with_odd_names(
    temp_storage: Any,
    fixture_archive_path: Path,
    tmp_path_factory: Any,
    members: list[tuple[str, bytes]],
    replace: bool,
) -> None:
    folder = tmp_path_factory.mktemp('odd')
    archive = folder / 'odd.aiida'
    with zipfile.ZipFile(fixture_archive_path) as source, zipfile.ZipFile(archive, 'w') as target:
        names = {name for name, _ in members}
        for info in source.infolist():
            if not (replace and info.filename in names):
                target.writestr(info, source.read(info))
        for name, content in members:
            try:
                target.writestr(name, content)
            except (ValueError, IndexError):  # zipfile itself refuses some names (a NUL cuts the name short)
                pass
    attempt(temp_storage, lambda: import_archive(temp_storage, archive))
    assert sorted(path.name for path in folder.iterdir()) == ['odd.aiida']
    assert not (folder.parent / 'escape.txt').exists() and not Path('/absolute').exists()
    shutil.rmtree(folder)
