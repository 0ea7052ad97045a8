"""Connections, transactions and the value codecs of ``sqlitedos.db``."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqlitedos import SqliteDosStorage
from sqlitedos.db import (
    Session,
    connect,
    decode_datetime,
    decode_json,
    encode_datetime,
    encode_json,
    json_contains,
    new_uuid,
    translate_errors,
)
from sqlitedos.exceptions import CorruptStorage, IntegrityError, ReadOnlyError, UnreachableStorage

# --- codecs --------------------------------------------------------------------------------------------------------


def test_datetime_text_is_aiidas(manifest) -> None:
    """Naive UTC, space separator, always six fractional digits: the form aiida writes (see the fixture)."""
    value = dt.datetime(2024, 5, 6, 7, 8, 9, 120, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert encode_datetime(value) == '2024-05-06 05:08:09.000120'
    assert encode_datetime(dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)) == '2024-05-06 07:08:09.000000'
    with pytest.raises(TypeError, match='datetime'):
        encode_datetime('2024-05-06')  # type: ignore[arg-type]


@given(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda minutes: dt.timedelta(minutes=minutes))),
)
def test_datetime_text_equals_strftime(value: dt.datetime, offset: dt.timedelta | None) -> None:
    """The fast encoder writes exactly what ``strftime('%Y-%m-%d %H:%M:%S.%f')`` of the UTC value writes."""
    if offset is not None:
        value = value.replace(tzinfo=dt.timezone(offset))
    try:
        reference = value.astimezone(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')
    except OverflowError:
        return  # the local-time conversion of a naive value at the edge of the range
    assert encode_datetime(value) == reference


def test_datetimes_in_the_fixture_have_our_format(fixture_profile_path: Path) -> None:
    connection = sqlite3.connect(fixture_profile_path / 'database.sqlite')
    ctimes = [row[0] for row in connection.execute('SELECT ctime FROM db_dbnode')]
    connection.close()
    assert ctimes and all(re.fullmatch(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}', text) for text in ctimes)
    for text in ctimes:
        assert encode_datetime(decode_datetime(text)) == text  # type: ignore[arg-type]


@given(st.datetimes(timezones=st.timezones(), min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(9000, 1, 1)))
def test_datetime_round_trip(value: dt.datetime) -> None:
    decoded = decode_datetime(encode_datetime(value))
    # (Compared in UTC: Python's inter-zone == is False for times in a DST fold, whatever their instant.)
    assert decoded == value.astimezone(dt.timezone.utc)
    assert decoded.tzinfo == dt.timezone.utc  # type: ignore[union-attr]


def test_json_is_json_dumps_defaults() -> None:
    value = {'b': [1, 2.5, None, True], 'a': 'é'}
    assert encode_json(value) == '{"b": [1, 2.5, null, true], "a": "\\u00e9"}' == json.dumps(value)
    assert decode_json(encode_json(value)) == value
    assert decode_json(None) is None
    assert decode_json(5) == 5  # a JSON scalar read back through NUMERIC affinity


def test_new_uuid_is_dashed_lowercase() -> None:
    assert re.fullmatch(r'[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}', new_uuid())


@pytest.mark.parametrize(
    ('container', 'contained', 'expected'),
    [
        ({'a': 1, 'b': [1, 2]}, {'b': [2]}, 1),
        ({'a': 1}, {'a': True}, 0),  # true is not 1
        ([1, 2, 3], [3, 1], 1),
        ([1, 2, 3], 2, 1),  # PostgreSQL: an array contains one of its scalars
        ([True], [1], 0),
        ({'a': {'b': 1, 'c': 2}}, {'a': {'b': 1}}, 1),
        ('x', 'x', 1),
        ({'a': 1}, [1], 0),
    ],
)
def test_json_contains_has_postgres_semantics(container, contained, expected) -> None:
    assert json_contains(json.dumps(container), json.dumps(contained)) == expected
    assert json_contains(None, '1') is None


# --- connections -----------------------------------------------------------------------------------------------------


def new_database(tmp_path: Path) -> Path:
    path = tmp_path / 'db.sqlite'
    sqlite3.connect(path).close()
    return path


def test_connect_sets_pragmas_and_never_creates(tmp_path: Path) -> None:
    with pytest.raises(UnreachableStorage, match='cannot open'):
        connect(tmp_path / 'missing.sqlite')
    assert not (tmp_path / 'missing.sqlite').exists()

    connection = connect(new_database(tmp_path))
    assert connection.execute('PRAGMA foreign_keys').fetchone() == (1,)
    assert connection.execute('PRAGMA busy_timeout').fetchone()[0] >= 10_000
    assert connection.isolation_level is None
    # LIKE is case-sensitive, as in aiida.
    assert connection.execute("SELECT 'ABC' LIKE 'abc'").fetchone() == (0,)
    connection.close()


def test_connect_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / 'not.sqlite'
    path.write_bytes(b'this is not a database' * 100)
    with pytest.raises(CorruptStorage, match='restore it from a backup'):
        connect(path)


def test_read_only_connection_refuses_writes(tmp_path: Path) -> None:
    path = new_database(tmp_path)
    connection = connect(path, read_only=True)
    with pytest.raises(ReadOnlyError, match='read-only'), translate_errors():
        connection.execute('CREATE TABLE t (x)')
    connection.close()


# --- transactions ----------------------------------------------------------------------------------------------------


@pytest.fixture
def session(tmp_path: Path):
    connection = connect(new_database(tmp_path))
    connection.execute('CREATE TABLE t (x INTEGER UNIQUE)')
    session = Session(connection, file_backed=True)
    yield session
    session.close()


def values(session: Session) -> list[int]:
    return [row[0] for row in session.connection.execute('SELECT x FROM t ORDER BY x')]


def test_inner_failure_keeps_outer_work(session: Session) -> None:
    with session.transaction() as connection:
        connection.execute('INSERT INTO t VALUES (1)')
        with pytest.raises(ZeroDivisionError), session.transaction():
            connection.execute('INSERT INTO t VALUES (2)')
            1 / 0  # noqa: B018
        with session.transaction():
            connection.execute('INSERT INTO t VALUES (3)')
        assert session.in_transaction
    assert not session.in_transaction
    assert values(session) == [1, 3]


def test_outer_failure_discards_everything(session: Session) -> None:
    with pytest.raises(RuntimeError), session.transaction() as connection:
        connection.execute('INSERT INTO t VALUES (1)')
        with session.transaction():
            connection.execute('INSERT INTO t VALUES (2)')
        raise RuntimeError('boom')
    assert values(session) == []
    assert not session.connection.in_transaction


def test_integrity_error_is_translated_and_rolled_back(session: Session) -> None:
    with pytest.raises(IntegrityError, match='integrity'), session.transaction() as connection, translate_errors():
        connection.execute('INSERT INTO t VALUES (1)')
        connection.execute('INSERT INTO t VALUES (1)')
    assert values(session) == []


def test_writes_outside_a_transaction_commit_at_once(session: Session, tmp_path: Path) -> None:
    session.connection.execute('INSERT INTO t VALUES (7)')
    other = sqlite3.connect(tmp_path / 'db.sqlite')
    assert other.execute('SELECT x FROM t').fetchall() == [(7,)]
    other.close()


def test_statements_issued_are_the_intended_ones(session: Session) -> None:
    issued: list[str] = []
    session.connection.set_trace_callback(issued.append)
    with session.transaction() as connection:
        with session.transaction(), session.transaction():
            connection.execute('INSERT INTO t VALUES (1)')
        with pytest.raises(KeyError), session.transaction():
            raise KeyError('x')
    session.connection.set_trace_callback(None)
    control = [statement for statement in issued if not statement.startswith(('INSERT', 'PRAGMA'))]
    assert control == [
        'BEGIN IMMEDIATE',
        'SAVEPOINT sp_1',
        'SAVEPOINT sp_2',
        'RELEASE sp_2',
        'RELEASE sp_1',
        'SAVEPOINT sp_1',
        'ROLLBACK TO sp_1',
        'RELEASE sp_1',
        'COMMIT',
    ]


def test_first_write_switches_to_wal(session: Session) -> None:
    assert session.connection.execute('PRAGMA journal_mode').fetchone() == ('delete',)
    with session.transaction() as connection:
        connection.execute('INSERT INTO t VALUES (1)')
    assert session.connection.execute('PRAGMA journal_mode').fetchone() == ('wal',)


def test_unknown_transaction_mode(session: Session) -> None:
    with pytest.raises(ValueError, match='unknown transaction mode'), session.transaction('EVERYTHING'):  # type: ignore[arg-type]
        pass


def test_storage_transaction_api(dos_storage: SqliteDosStorage) -> None:
    assert not dos_storage.in_transaction
    with dos_storage.transaction() as connection:
        assert dos_storage.in_transaction
        connection.execute(
            'INSERT INTO db_dbsetting ("key", val, description, time) VALUES (?, ?, ?, ?)',
            ('k', '1', '', '2024-01-01 00:00:00.000000'),
        )
        with pytest.raises(RuntimeError), dos_storage.transaction():
            dos_storage.set_global_variable('inner', 2)
            raise RuntimeError
    assert not dos_storage.in_transaction
    assert dos_storage.get_global_variable('k') == 1
    with pytest.raises(KeyError):
        dos_storage.get_global_variable('inner')


# --- connect(): the one opener, with its pragma parameters ------------------------------------------------------------


def test_connect_creates_only_when_asked(tmp_path: Path) -> None:
    """Opening never makes a database file unless ``create`` is given; then it does (a backup's target)."""
    path = tmp_path / 'new.sqlite'
    with pytest.raises((CorruptStorage, UnreachableStorage, sqlite3.Error, OSError)):
        connect(path)
    assert not path.exists()
    connection = connect(path, create=True)
    try:
        connection.execute('CREATE TABLE t (x)')
        assert connection.execute('PRAGMA foreign_keys').fetchone() == (1,)
    finally:
        connection.close()
    assert path.is_file()


def test_connect_sets_the_pragmas_it_is_given(tmp_path: Path) -> None:
    """A scratch file's pragmas (the zip index's) and an archive's (no foreign keys, rollback journal) are set."""
    scratch = connect(
        tmp_path / 'scratch.sqlite', create=True, journal_mode='OFF', synchronous='OFF', locking_mode='EXCLUSIVE'
    )
    try:
        assert scratch.execute('PRAGMA journal_mode').fetchone() == ('off',)
        assert scratch.execute('PRAGMA synchronous').fetchone() == (0,)
        assert scratch.execute('PRAGMA locking_mode').fetchone() == ('exclusive',)
    finally:
        scratch.close()
    wal = tmp_path / 'wal.sqlite'
    setup = connect(wal, create=True, journal_mode='WAL')
    setup.execute('CREATE TABLE t (x)')
    setup.close()
    archive = connect(wal, foreign_keys=False, journal_mode='DELETE')
    try:
        assert archive.execute('PRAGMA foreign_keys').fetchone() == (0,)
        assert archive.execute('PRAGMA journal_mode').fetchone() == ('delete',)
    finally:
        archive.close()
    assert wal.read_bytes()[18:20] == b'\x01\x01'  # a rollback-journal header: not WAL any more


@pytest.mark.parametrize(
    'options',
    [
        {'journal_mode': 'wal; DROP TABLE t'},
        {'synchronous': 'SOMETIMES'},
        {'locking_mode': 'x'},
        {'read_only': True},
    ],
)
def test_connect_refuses_unknown_pragma_values(tmp_path: Path, options: dict) -> None:
    """Pragma values are spliced into SQL, so only the documented names pass; nothing is created for a refusal."""
    with pytest.raises(ValueError):
        connect(tmp_path / 'x.sqlite', create=True, **options)
    assert not (tmp_path / 'x.sqlite').exists()
