"""The schema files and the migration runner, checked against the database aiida-core 2.9.4 made."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from sqlitedos import SqliteDosStorage, migrate
from sqlitedos.db import Session, connect
from sqlitedos.exceptions import IncompatibleStorageSchema, StorageMigrationError

CALCJOB = 'process.calculation.calcjob.CalcJobNode.'
CALCFUNCTION = 'process.calculation.calcfunction.CalcFunctionNode.'


def normalised_schema(connection: sqlite3.Connection) -> dict[str, object]:
    """Everything that defines the schema, in a form that ignores whitespace and object order.

    For each table: its normalised ``CREATE`` text (its clauses as a sorted list), and SQLite's own reading of it (columns with types, nullability,
    defaults and primary key; foreign keys; indexes with their columns and uniqueness); the ``CREATE`` text of every
    named index. ``sqlite_sequence`` (which appears with the first AUTOINCREMENT insert) is left out.
    """

    def squash(sql: str | None) -> object:
        if sql is None:
            return None
        text = re.sub(r'\s+', ' ', sql).replace('( ', '(').replace(' )', ')').strip()
        if not text.startswith('CREATE TABLE'):
            return text
        # aiida emits a table's columns and constraints in an order that varies between runs: compare them as a set.
        head, body = text.split('(', 1)
        return head.strip(), sorted(clause.strip() for clause in split_top_level(body.rsplit(')', 1)[0]))

    schema: dict[str, object] = {}
    objects = connection.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_sequence' ORDER BY name"
    ).fetchall()
    for kind, name, table, sql in objects:
        entry: dict[str, object] = {'type': kind, 'table': table, 'sql': squash(sql)}
        if kind == 'table':
            entry['columns'] = connection.execute(f'PRAGMA table_info("{name}")').fetchall()
            # (The first field, the constraint's ordinal, follows the varying clause order: leave it out.)
            foreign_keys = connection.execute(f'PRAGMA foreign_key_list("{name}")').fetchall()
            entry['foreign_keys'] = sorted(row[1:] for row in foreign_keys)
            indexes = []
            for _, index_name, unique, origin, partial in connection.execute(f'PRAGMA index_list("{name}")'):
                columns = [row[2] for row in connection.execute(f'PRAGMA index_info("{index_name}")')]
                indexes.append((index_name, unique, origin, partial, columns))
            entry['indexes'] = sorted(indexes)
        schema[name] = entry
    return schema


def split_top_level(text: str) -> list[str]:
    """Split on the commas that are not inside parentheses."""
    parts, depth, current = [], 0, ''
    for char in text:
        depth += {'(': 1, ')': -1}.get(char, 0)
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
        else:
            current += char
    return parts + [current]


def schema_of(path: Path) -> dict[str, object]:
    connection = sqlite3.connect(path)
    try:
        return normalised_schema(connection)
    finally:
        connection.close()


def test_initialised_schema_equals_aiidas(tmp_path: Path, fixture_profile_path: Path) -> None:
    SqliteDosStorage.initialise(SqliteDosStorage.create_profile('new', filepath=tmp_path / 'new'))
    ours = schema_of(tmp_path / 'new' / 'database.sqlite')
    aiidas = schema_of(fixture_profile_path / 'database.sqlite')
    assert set(ours) == set(aiidas)
    for name in aiidas:
        assert ours[name] == aiidas[name], name
    # The comparison is not vacuous: every aiida table and its indexes are there.
    tables = {name for name, entry in aiidas.items() if entry['type'] == 'table'}  # type: ignore[index]
    assert {'db_dbnode', 'db_dblink', 'db_dbgroup_dbnodes', 'alembic_version', 'db_dbsetting'} <= tables
    assert sum(1 for entry in aiidas.values() if entry['type'] == 'index') >= 20  # type: ignore[index]


def test_revisions_and_head() -> None:
    assert [name for name, _ in migrate.revisions()] == ['main_0001', 'main_0002']
    assert migrate.version_head() == 'main_0002' == SqliteDosStorage.version_head()


def test_split_statements_keeps_semicolons_inside_strings_and_triggers() -> None:
    text = "-- a comment\nINSERT INTO t VALUES ('a;b');\nCREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;\n"
    assert migrate.split_statements(text) == (
        "INSERT INTO t VALUES ('a;b');",
        'CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END;',
    )
    with pytest.raises(StorageMigrationError, match='incomplete'):
        migrate.split_statements('SELECT 1; SELECT (')


def database_at(path: Path, revision: str) -> sqlite3.Connection:
    """A new database file at ``path`` whose schema is that of ``revision``."""
    path.touch()
    connection = connect(path)
    with Session(connection, file_backed=True).transaction() as conn:
        migrate.create_schema(conn, until=revision)
    return connection


def insert_node(connection: sqlite3.Connection, node_type: str, extras: dict, uuid: str) -> None:
    connection.execute(
        'INSERT INTO db_dbnode (uuid, node_type, process_type, label, description, ctime, mtime, attributes, extras,'
        " repository_metadata, user_id) VALUES (?, ?, NULL, '', '', '2024-01-01 00:00:00.000000',"
        " '2024-01-01 00:00:00.000000', '{}', ?, '{}', 1)",
        (uuid, node_type, json.dumps(extras)),
    )


def test_migrating_main_0001_drops_calcjob_hashes_only(tmp_path: Path) -> None:
    connection = database_at(tmp_path / 'db.sqlite', 'main_0001')
    connection.execute("INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ('a@b', '', '', '')")
    insert_node(connection, CALCJOB, {'_aiida_hash': 'abc', 'keep': 1}, '00000000-0000-4000-8000-000000000001')
    insert_node(connection, CALCJOB, {'other': [1, 2]}, '00000000-0000-4000-8000-000000000002')
    insert_node(connection, CALCFUNCTION, {'_aiida_hash': 'def'}, '00000000-0000-4000-8000-000000000003')
    assert migrate.read_version(connection) == 'main_0001'

    steps = migrate.plan(connection)
    assert [step.revision for step in steps] == ['main_0002']
    migrate.apply(Session(connection, file_backed=True), steps)

    assert migrate.read_version(connection) == 'main_0002'
    assert migrate.plan(connection) == []
    extras = [json.loads(row[0]) for row in connection.execute('SELECT extras FROM db_dbnode ORDER BY uuid')]
    assert extras == [{'keep': 1}, {'other': [1, 2]}, {'_aiida_hash': 'def'}]
    connection.close()


def test_migrate_storage_folder_from_main_0001(fixture_profile_path: Path) -> None:
    """The fixture storage, stamped back to main_0001, migrates to the head through the public API."""
    database = fixture_profile_path / 'database.sqlite'
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("UPDATE alembic_version SET version_num = 'main_0001'")
    connection.close()
    profile = SqliteDosStorage.create_profile('old', filepath=fixture_profile_path)
    assert SqliteDosStorage.version_profile(profile) == 'main_0001'
    with pytest.raises(IncompatibleStorageSchema, match='main_0001.*main_0002.*migrate'):
        SqliteDosStorage(profile)
    SqliteDosStorage.migrate(profile)
    assert SqliteDosStorage.version_profile(profile) == 'main_0002'
    SqliteDosStorage(profile).close()


def test_unknown_revision_is_refused_and_left_alone(tmp_path: Path) -> None:
    database = tmp_path / 'db.sqlite'
    connection = database_at(database, 'main_0002')
    connection.execute("UPDATE alembic_version SET version_num = 'main_0099'")
    with pytest.raises(IncompatibleStorageSchema, match='main_0099.*newer'):
        migrate.plan(connection)
    assert migrate.read_version(connection) == 'main_0099'
    connection.close()


def test_failing_step_leaves_the_previous_revision(tmp_path: Path) -> None:
    connection = database_at(tmp_path / 'db.sqlite', 'main_0001')
    broken = migrate.Step('main_0002', ('UPDATE db_dbnode SET extras = 1', 'SELECT * FROM no_such_table'))
    connection.execute("INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES ('a@b', '', '', '')")
    insert_node(connection, CALCJOB, {'_aiida_hash': 'abc'}, '00000000-0000-4000-8000-000000000001')
    with pytest.raises(StorageMigrationError, match='main_0002.*left as it was'):
        migrate.apply(Session(connection, file_backed=True), [broken])
    assert migrate.read_version(connection) == 'main_0001'
    assert connection.execute('SELECT extras FROM db_dbnode').fetchone() == ('{"_aiida_hash": "abc"}',)
    connection.close()


def test_stamp_creates_the_version_table(tmp_path: Path) -> None:
    database = tmp_path / 'db.sqlite'
    database.touch()
    connection = connect(database)
    assert migrate.read_version(connection) is None
    migrate.stamp(connection, 'main_0001')
    assert migrate.read_version(connection) == 'main_0001'
    migrate.stamp(connection, 'main_0002')
    assert connection.execute('SELECT version_num FROM alembic_version').fetchall() == [('main_0002',)]
    connection.close()
