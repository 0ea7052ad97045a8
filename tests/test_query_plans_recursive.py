"""Recursive walks over links read only the links they reach, however many links the table holds.

SQLite 3.38+ may build a bloom filter over the whole link table before the first recursive step when its statistics
say the table is large (64 ms at 1M links for a walk that reaches 240 nodes). Statistics of a million-link table are
planted in ``sqlite_stat1`` of a small storage, then the plans of every recursive statement sqlitedos runs
(QueryBuilder traversals, the graph traversal behind delete/export, the cycle check on every new link) are read.
Each test first shows that the same statement without the guard does get the bloom filter, so it cannot pass idly.
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from sqlitedos import QueryBuilder
from sqlitedos.entities import nodes as nodes_module
from sqlitedos.graph import TRAVERSE

pytestmark = pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 38, 0), reason='bloom filters came with SQLite 3.38')

LINK_INDEXES = {
    'ix_db_dblink_db_dblink_input_id': '1000000 1',
    'ix_db_dblink_db_dblink_output_id': '1000000 2',
    'ix_db_dblink_db_dblink_type': '1000000 500000',
    'ix_db_dblink_db_dblink_label': '1000000 200000',
}
GUARD = re.compile(r' OR \w+\.\w+ IS NULL\)')


@pytest.fixture
def big_links(temp_storage):
    """The temp storage, its planner told that db_dblink holds a million links (as at 1M nodes)."""
    connection = temp_storage.get_session()
    connection.execute('ANALYZE')
    connection.execute("DELETE FROM sqlite_stat1 WHERE tbl = 'db_dblink'")
    connection.executemany(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('db_dblink', ?, ?)", sorted(LINK_INDEXES.items())
    )
    connection.execute("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('db_dblink', NULL, '1000000')")
    connection.execute('ANALYZE sqlite_schema')  # reload the statistics
    return temp_storage


def plan(connection: sqlite3.Connection, sql: str, params) -> str:
    return ' | '.join(row[3] for row in connection.execute(f'EXPLAIN QUERY PLAN {sql}', params))


def unguarded(sql: str) -> str:
    """The statement as it was: the type filter alone in the recursive step's WHERE."""
    stripped = GUARD.sub(')', sql)
    assert stripped != sql, 'the statement has no guard to strip'
    return stripped


def assert_no_bloom_filter(connection: sqlite3.Connection, sql: str, params) -> None:
    assert 'BLOOM FILTER' in plan(connection, unguarded(sql), params), 'the planted statistics no longer tempt it'
    ours = plan(connection, sql, params)
    assert 'BLOOM FILTER' not in ours, ours
    assert 'USING INDEX ix_db_dblink_db_dblink' in ours  # each step looks its links up by index


@pytest.mark.parametrize('keyword', ['with_ancestors', 'with_descendants'])
@pytest.mark.parametrize('project', [['id'], ['id', 'depth'], ['id', 'path']])
def test_query_builder_traversals_get_no_bloom_filter(big_links, keyword, project) -> None:
    edge_project = [name for name in project if name != 'id']
    qb = QueryBuilder(backend=big_links).append(entity_type='', tag='start', filters={'id': 1})
    qb.append(entity_type='', tag='walk', project='id', edge_project=edge_project, **{keyword: 'start'})
    compiled = big_links.query().compile(qb.as_dict())
    assert_no_bloom_filter(big_links.get_session(), compiled.sql, compiled.params)


def test_the_graph_traversal_gets_no_bloom_filter(big_links) -> None:
    params = {'start': '[1]', 'forward': '["create", "input_calc"]', 'backward': '["input_work"]'}
    assert_no_bloom_filter(big_links.get_session(), TRAVERSE, params)


def test_the_cycle_check_on_every_new_link_gets_no_bloom_filter(big_links) -> None:
    params = (1, json.dumps(['create', 'input_calc']), 2)
    assert_no_bloom_filter(big_links.get_session(), nodes_module.REACHES_ALONG_PROVENANCE, params)
