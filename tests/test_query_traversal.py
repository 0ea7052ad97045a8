"""Ancestors/descendants cost nodes + edges, not paths: ladders of diamonds (a node feeding two calculations whose
outputs meet again) up to 40 steps, against Python's closure; ``depth`` is the shortest depth per node; ``path``
gives one row per path and a ``depth`` filter on the edge stops the recursion (docs/query-semantics.md)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlitedos import SqliteTempBackend
from tests.querydicts import node_query

INSERT_NODE = (
    'INSERT INTO db_dbnode (uuid, node_type, label, description, ctime, mtime, attributes, extras, '
    "repository_metadata, user_id) VALUES (?, ?, '', '', ?, ?, '{}', '{}', '{}', ?) RETURNING id"
)
INSERT_LINK = 'INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (?, ?, ?, ?)'
TS = '2026-01-01 00:00:00.000000'
DATA, CALC = 'data.core.int.Int.', 'process.calculation.calcfunction.CalcFunctionNode.'
#: SQLite virtual-machine steps a traversal may take before the progress handler stops it (a 40-step ladder has
#: 2**41 paths: enumerating them would never finish; its 241 nodes and 320 links take well under this).
STEP_BUDGET = 20_000_000


@pytest.fixture
def storage() -> Iterator[SqliteTempBackend]:
    backend = SqliteTempBackend(SqliteTempBackend.create_profile())
    yield backend
    backend.close()


def add_node(storage: SqliteTempBackend, node_type: str) -> int:
    connection = storage.get_session()
    user = connection.execute('SELECT min(id) FROM db_dbuser').fetchone()[0]
    if user is None:
        user = connection.execute(
            "INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ('t@x', '', '', '') RETURNING id"
        ).fetchone()[0]
    (pk,) = connection.execute(INSERT_NODE, (str(uuid.uuid4()), node_type, TS, TS, user)).fetchone()
    return pk


def diamond_ladder(storage: SqliteTempBackend, steps: int) -> tuple[int, list[tuple[int, int]]]:
    """``steps`` diamonds: data -> two calculations -> two outputs -> one calculation -> the next data. Returns the
    root and the followed links (input, output)."""
    connection = storage.get_session()
    root = current = add_node(storage, DATA)
    links: list[tuple[int, int, str]] = []
    for _ in range(steps):
        left, right, meet = add_node(storage, CALC), add_node(storage, CALC), add_node(storage, CALC)
        out_left, out_right, after = add_node(storage, DATA), add_node(storage, DATA), add_node(storage, DATA)
        links += [(current, left, 'input_calc'), (current, right, 'input_calc')]
        links += [(left, out_left, 'create'), (right, out_right, 'create')]
        links += [(out_left, meet, 'input_calc'), (out_right, meet, 'input_calc'), (meet, after, 'create')]
        current = after
    connection.executemany(INSERT_LINK, [(a, b, 'l', kind) for a, b, kind in links])
    return root, [(a, b) for a, b, _ in links]


def traversal(root: int, keyword: str = 'with_ancestors', edge_project=(), edge_filters=None) -> dict:
    data = node_query({'id': root}, project=[])
    data['path'].append(
        {
            'entity_type': '',
            'orm_base': 'node',
            'tag': 'd',
            'joining_keyword': keyword,
            'joining_value': 'n',
            'edge_tag': 'n--d',
            'outerjoin': False,
        }
    )
    data['filters'].update({'d': {}, 'n--d': edge_filters or {}})
    data['project'].update({'d': ['id'], 'n--d': list(edge_project)})
    return data


def bounded(storage: SqliteTempBackend, run):
    """Run ``run()`` with SQLite stopped after ``STEP_BUDGET`` virtual-machine steps."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1000
        return int(steps[0] > STEP_BUDGET)

    connection = storage.get_session()
    connection.set_progress_handler(tick, 1000)
    try:
        return run()
    finally:
        connection.set_progress_handler(None, 0)


def shortest_depths(edges: list[tuple[int, int]], start: int) -> dict[int, int]:
    """Breadth-first: each reachable node's shortest depth (0 for a direct link, as aiida counts)."""
    depths: dict[int, int] = {}
    frontier, depth = {start}, 0
    while frontier:
        frontier = {b for a, b in edges if a in frontier} - set(depths)
        for node in frontier:
            depths[node] = depth
        depth += 1
    return depths


def all_paths(edges: list[tuple[int, int]], start: int) -> list[list[int]]:
    out, stack = [], [[start]]
    while stack:
        path = stack.pop()
        for a, b in edges:
            if a == path[-1]:
                out.append(path + [b])
                stack.append(path + [b])
    return out


@pytest.mark.parametrize('steps', [1, 5, 18, 40])
def test_descendants_of_a_diamond_ladder_cost_nodes_not_paths(storage, steps):
    root, edges = diamond_ladder(storage, steps)
    rows = bounded(storage, lambda: storage.query().all(traversal(root)))
    expected = shortest_depths(edges, root)
    assert len(expected) == 6 * steps
    assert sorted(row[0] for row in rows) == sorted(expected)  # one row per node, not one per path


@pytest.mark.parametrize('steps', [5, 40])
def test_ancestors_of_the_ladder_end(storage, steps):
    root, edges = diamond_ladder(storage, steps)
    end = max(b for _, b in edges)
    reversed_edges = [(b, a) for a, b in edges]
    rows = bounded(storage, lambda: storage.query().all(traversal(end, 'with_descendants')))
    assert sorted(row[0] for row in rows) == sorted(shortest_depths(reversed_edges, end))
    assert root in {row[0] for row in rows}


@pytest.mark.parametrize('steps', [3, 40])
def test_projected_depth_is_the_shortest_per_node(storage, steps):
    root, edges = diamond_ladder(storage, steps)
    # A shortcut: the root feeds the last calculation directly, so the ladder's end is at depth 1 too.
    end = max(b for _, b in edges)
    (last_calc,) = [a for a, b in edges if b == end]
    storage.get_session().execute(INSERT_LINK, (root, last_calc, 'l', 'input_calc'))
    edges.append((root, last_calc))
    data = traversal(root, edge_project=['depth', 'ancestor_id', 'descendant_id'])
    rows = bounded(storage, lambda: storage.query().all(data))
    assert {node: depth for node, depth, _, _ in rows} == shortest_depths(edges, root)
    assert len(rows) == len(shortest_depths(edges, root))
    assert {(ancestor, node) for node, _, ancestor, descendant in rows if descendant == node} == {
        (root, node) for node in shortest_depths(edges, root)
    }
    assert {node: depth for node, depth, _, _ in rows}[end] == 1


def test_a_depth_filter_applies_to_the_shortest_depth(storage):
    root, edges = diamond_ladder(storage, 2)
    first = edges[0][1]  # a calculation the root feeds directly (depth 0); no other path reaches it
    end = max(b for _, b in edges)
    storage.get_session().execute(INSERT_LINK, (root, end, 'l', 'create'))  # the end: depth 0 and depth 5
    rows = storage.query().all(traversal(root, edge_project=['depth'], edge_filters={'depth': {'>': 0}}))
    expected = {node for node, depth in shortest_depths(edges + [(root, end)], root).items() if depth > 0}
    assert {node for node, _ in rows} == expected
    assert end not in expected and first not in expected


def test_projected_path_gives_every_path(storage):
    root, edges = diamond_ladder(storage, 3)
    rows = storage.query().all(traversal(root, edge_project=['path', 'depth']))
    expected = all_paths(edges, root)
    assert len(expected) > 2 * len(shortest_depths(edges, root))  # paths, not nodes
    assert len(rows) == len(expected)
    assert sorted(path for _, path, _ in rows) == sorted(expected)
    assert all(depth == len(path) - 2 and node == path[-1] for node, path, depth in rows)


def test_a_depth_filter_bounds_the_paths_of_a_long_ladder(storage):
    root, edges = diamond_ladder(storage, 40)
    data = traversal(root, edge_project=['path'], edge_filters={'depth': {'<': 8}})
    rows = bounded(storage, lambda: storage.query().all(data))
    expected = [path for path in _paths_up_to(edges, root, 9)]
    assert sorted(path for _, path in rows) == sorted(expected)


def _paths_up_to(edges: list[tuple[int, int]], start: int, length: int) -> list[list[int]]:
    out, stack = [], [[start]]
    while stack:
        path = stack.pop()
        if len(path) == length:
            continue
        for a, b in edges:
            if a == path[-1]:
                out.append(path + [b])
                stack.append(path + [b])
    return out


def test_enumerating_the_paths_of_a_long_ladder_is_stopped_not_silently_truncated(storage):
    """Without a bound, paths are what was asked for: the budget runs out (the guard of the tests above works)."""
    root, _ = diamond_ladder(storage, 40)
    with pytest.raises(sqlite3.OperationalError, match='interrupted'):
        bounded(storage, lambda: storage.query().all(traversal(root, edge_project=['path'])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(2, 8),
    edges=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), max_size=14),
    keyword=st.sampled_from(['with_ancestors', 'with_descendants']),
)
def test_node_sets_equal_the_per_path_walk(storage, n, edges, keyword):
    """On small random DAGs, the node-bounded walk finds the nodes (and, with depth, the shortest depth) that the
    per-path walk (``UNION ALL``, the previous implementation and aiida's) finds."""
    connection = storage.get_session()
    connection.execute('DELETE FROM db_dblink')
    connection.execute('DELETE FROM db_dbnode')
    ids = [add_node(storage, DATA) for _ in range(n)]
    links = sorted({(ids[a - 1], ids[b - 1]) for a, b in edges if a < b <= n})
    connection.executemany(INSERT_LINK, [(a, b, 'l', 'input_calc') for a, b in links])
    for root in ids:
        per_path = storage.query().all(traversal(root, keyword, edge_project=['depth', 'path']))
        assert {row[0] for row in storage.query().all(traversal(root, keyword))} == {row[0] for row in per_path}
        shortest: dict[int, int] = {}
        for node, depth, _ in per_path:
            shortest[node] = min(depth, shortest.get(node, depth))
        with_depth = storage.query().all(traversal(root, keyword, edge_project=['depth']))
        assert dict(with_depth) == shortest and len(with_depth) == len(shortest)
