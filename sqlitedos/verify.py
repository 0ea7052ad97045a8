"""Integrity checks of a storage folder: the database, the container, and the tie between them.

``verify(storage)`` reads only; ``verify(storage, repair=True)`` also deletes the container objects that no node
references (the one repair that can never lose data), and reports what it did. Everything else it finds needs a
person: restore the object or the database from a backup.

``repair`` takes exactly the proof that full maintenance takes (``SqliteDosStorage.exclusive_use``): it refuses with
``LockedProfileError`` while any other process (aiida-core's included) or connection has the storage open, and it
recomputes the unreferenced objects under that lock before deleting them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlitedos import migrate
from sqlitedos.db import Session, connect, decode_json, encode_json
from sqlitedos.exceptions import CorruptStorage, ReadOnlyError, UnreachableStorage
from sqlitedos.layout import FILENAME_CONTAINER, FILENAME_DATABASE, PACKS, PACKS_INDEX, read_container_id
from sqlitedos.links import (
    DEGREE_COLUMNS,
    KIND_PREFIXES,
    LINK_RULES,
    LinkType,
    node_kind,
    validate_link_label,
)
from sqlitedos.storage.sqlite_dos import (
    REPOSITORY_UUID_KEY,
    SELECT_REPOSITORY_UUID,
    SqliteDosStorage,
)
from sqlitedos.tables import TABLES, quote_identifier

__all__ = ('Problem', 'VerifyReport', 'iter_repository_keys', 'verify')

Progress = Callable[[str, int, int], None] | None

HASH_CHUNK = 1024 * 1024

#: Objects hashed per ``get_objects_stream_and_meta`` call: below disk-objectstore's ``_MAX_CHUNK_ITERATE_LENGTH``
#: (9500), over which it merges the keys against its whole index instead of looking them up.
HASH_BATCH = 5000

# Only nodes with files: most nodes have none ('{}'), and decoding a million of those costs seconds.
SELECT_REPOSITORY_METADATA = """
    SELECT id, repository_metadata FROM db_dbnode
    WHERE repository_metadata IS NOT '{}' AND repository_metadata IS NOT NULL AND json_valid(repository_metadata)
"""
# Links that break a rule, found in SQL so that only the broken ones reach Python (which words the problem): one
# ``WHEN ? THEN`` per link type of LINK_RULES checks the kinds at both ends (node_type prefixes, bound as parameters;
# a CASE costs a third of a join against a table of rules: 0.9 vs 2.0 s at 1M links); a dangling end joins no node.
SELECT_SUSPECT_LINKS = """
    SELECT l.id, l.type, l.label, l.input_id, l.output_id, s.node_type, t.node_type
    FROM db_dblink AS l
    LEFT JOIN db_dbnode AS s ON s.id = l.input_id
    LEFT JOIN db_dbnode AS t ON t.id = l.output_id
    WHERE s.id IS NULL OR t.id IS NULL OR l.input_id = l.output_id
        OR NOT (CASE l.type {kinds} ELSE 0 END)
        OR typeof(l.label) != 'text' OR l.label IN verify_bad_labels
"""
LINK_KINDS_CASE = 'WHEN ? THEN substr(s.node_type, 1, ?) = ? AND substr(t.node_type, 1, ?) = ?'
# Labels repeat (x, y, result, ...): each distinct one is checked once, in Python, and the links with a bad one are
# picked out by the query above (the label index answers this without reading the links).
SELECT_DISTINCT_LABELS = 'SELECT DISTINCT label FROM db_dblink'
# A table, not a JSON parameter: SQLite's JSON cuts a string at "\u0000", and a NUL in a label is one thing to find.
CREATE_BAD_LABELS = 'CREATE TEMP TABLE verify_bad_labels (label TEXT PRIMARY KEY)'
INSERT_BAD_LABEL = 'INSERT INTO verify_bad_labels (label) VALUES (?)'
SELECT_LINK_COUNT = 'SELECT count(*) FROM db_dblink'
# One pass per end over every link (a scan: the type index would only add lookups); a type's rule at that end says
# whether the label and the node at the other end are part of what must be unique: the two parameters list the types
# for which they are (from links.DEGREE_COLUMNS).
SELECT_DEGREE_VIOLATIONS = """
    SELECT type, {own},
        CASE WHEN type IN (SELECT value FROM json_each(?)) THEN label END,
        CASE WHEN type IN (SELECT value FROM json_each(?)) THEN {other} END,
        COUNT(*)
    FROM db_dblink NOT INDEXED WHERE type IN (SELECT value FROM json_each(?))
    GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1
"""
SELECT_INVALID_JSON = 'SELECT id, {columns} FROM {table} WHERE {invalid}'
# The referenced keys live in a temporary table (one row per distinct key, with the first node naming it), so memory
# stays flat however many files there are; the container's own index is attached to join against it.
CREATE_REFERENCED = 'CREATE TEMP TABLE verify_referenced (key TEXT PRIMARY KEY, node_id INTEGER) WITHOUT ROWID'
INSERT_REFERENCED = 'INSERT OR IGNORE INTO verify_referenced (key, node_id) VALUES (?, ?)'
CREATE_PRESENT = 'CREATE TEMP TABLE verify_present (key TEXT PRIMARY KEY) WITHOUT ROWID'
INSERT_PRESENT = 'INSERT OR IGNORE INTO verify_present (key) VALUES (?)'
# The pack index is read through its own read-only connection (db.connect knows how to open it without a trace on
# any media) and copied into a temporary table, so the join below needs no ATTACH.
CREATE_PACKED = (
    'CREATE TEMP TABLE verify_packed (hashkey TEXT PRIMARY KEY, pack_id INTEGER, "offset" INTEGER, length INTEGER, '
    'compressed INTEGER) WITHOUT ROWID'
)
SELECT_PACKED = 'SELECT hashkey, pack_id, "offset", length, compressed FROM db_object'
INSERT_PACKED = 'INSERT OR IGNORE INTO verify_packed VALUES (?, ?, ?, ?, ?)'
SELECT_REFERENCED_COUNT = 'SELECT count(*) FROM verify_referenced'
# Pack by pack in offset order (loose objects first), so that a packed container is read sequentially.
SELECT_REFERENCED_IN_PACK_ORDER = """
    SELECT r.key, r.node_id, o.pack_id, o."offset", o.length, o.compressed FROM verify_referenced AS r
    LEFT JOIN verify_packed AS o ON o.hashkey = r.key
    ORDER BY o.pack_id, o."offset", r.key
"""
SELECT_REFERENCED_IN_KEY_ORDER = 'SELECT key, node_id, NULL, NULL, NULL, NULL FROM verify_referenced ORDER BY key'
SELECT_UNREFERENCED = """
    SELECT p.key FROM verify_present AS p
    WHERE NOT EXISTS (SELECT 1 FROM verify_referenced AS r WHERE r.key = p.key) ORDER BY p.key
"""
SELECT_PRESENT_COUNT = 'SELECT count(*) FROM verify_present'
_HEX_DIGITS = frozenset('0123456789abcdef')


@dataclass(frozen=True)
class Problem:
    """One thing wrong: a short ``kind`` (``missing_object``, ``corrupt_object``, ``link_rule``, ...) and a detail."""

    kind: str
    detail: str


@dataclass
class VerifyReport:
    """What ``verify`` found (``problems``), what it noticed (``unreferenced``) and what ``repair`` did."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if no problem was found (unreferenced objects are not a problem)."""
        return not self.problems

    def add(self, kind: str, detail: str) -> None:
        self.problems.append(Problem(kind, detail))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {
            'path': self.path,
            'ok': self.ok,
            'counts': self.counts,
            'problems': [{'kind': p.kind, 'detail': p.detail} for p in self.problems],
            'unreferenced': self.unreferenced,
            'repaired': self.repaired,
        }

    def render(self) -> str:
        """The report as text for people."""
        lines = [f'Storage {self.path}: {"OK" if self.ok else f"{len(self.problems)} problem(s)"}']
        lines += [f'  checked {name}: {value}' for name, value in self.counts.items()]
        lines += [f'  [{p.kind}] {p.detail}' for p in self.problems]
        if self.unreferenced:
            lines.append(
                f'  {len(self.unreferenced)} unreferenced object(s) in the container (`--repair` deletes them)'
            )
        if self.repaired:
            lines.append(f'  repaired: deleted {len(self.repaired)} unreferenced object(s)')
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.render()


def iter_file_keys(tree: Any) -> Iterator[str]:
    """The repository keys in one node's ``repository_metadata`` tree (SPEC 3.3)."""
    if not isinstance(tree, dict):
        return
    if 'k' in tree:
        yield tree['k']
    for child in (tree.get('o') or {}).values():
        yield from iter_file_keys(child)


def iter_repository_keys(connection: sqlite3.Connection) -> Iterator[tuple[int, str]]:
    """``(node id, key)`` for every file of every node."""
    for node_id, cell in connection.execute(SELECT_REPOSITORY_METADATA):
        for key in iter_file_keys(decode_json(cell)):
            yield node_id, key


def _folder_of(storage: SqliteDosStorage | str | os.PathLike[str]) -> Path:
    if isinstance(storage, (str, os.PathLike)):
        return Path(storage).absolute()
    return Path(storage.filepath_root)


def verify(
    storage: SqliteDosStorage | str | os.PathLike[str], repair: bool = False, progress: Progress = None
) -> VerifyReport:
    """Check a storage folder (an open ``SqliteDosStorage`` or its path) and return a ``VerifyReport``.

    A path is checked without opening it as a storage, so a folder that ``SqliteDosStorage`` refuses (wrong schema
    version, mismatched repository uuid) can still be examined.
    """
    folder = _folder_of(storage)
    report = VerifyReport(str(folder))
    database = folder / FILENAME_DATABASE
    if not database.is_file():
        raise UnreachableStorage(f'{str(folder)!r} has no {FILENAME_DATABASE}: it is not a storage folder')
    connection = connect(database, read_only=True)
    try:
        sqlite_checks = _SqliteChecks(database)
        try:
            examinable = _check_schema_version(connection, report)
            damage: sqlite3.DatabaseError | None = None
            if examinable:
                try:
                    _check_content(connection, folder, report, progress)
                except sqlite3.DatabaseError as exc:
                    damage = exc
        except BaseException:
            sqlite_checks.cancel()
            raise
        readable, found = sqlite_checks.result()
    finally:
        connection.close()
    if not readable:
        report.problems[:] = found  # nothing else can be trusted
        return report
    report.problems[:0] = found  # SQLite's own findings first
    if damage is not None:
        if not found:
            raise damage
        report.add('database', f'the other checks stopped at the damage: {damage}')
        return report
    if repair and report.unreferenced:
        report.repaired = _repair(storage, folder)
    return report


def _check_content(connection: sqlite3.Connection, folder: Path, report: VerifyReport, progress: Progress) -> None:
    """Everything beyond SQLite's own checks: links, JSON, the container, and the keys that tie them."""
    container_id = _check_repository_uuid(connection, folder / FILENAME_CONTAINER, report)
    _check_links(connection, report)
    _check_json(connection, report)
    _collect_referenced_keys(connection, report)
    if container_id is not None:
        container = folder / FILENAME_CONTAINER
        if _check_pack_index(container, report) and _check_repack_leftovers(container, report):
            _check_objects(connection, container, report, progress)


class _SqliteChecks:
    """``PRAGMA integrity_check`` and ``foreign_key_check`` in a thread of their own, on their own connection.

    They are most of verify's time (5 of 6 s at 1M nodes) and SQLite runs them without Python's lock, so the checks
    of the content run meanwhile on the caller's connection: on two cores verify then costs about what those two
    pragmas alone cost. ``result()`` waits for them (cutting them short if the caller failed).
    """

    def __init__(self, database: Path) -> None:
        self._database = database
        self._connection: sqlite3.Connection | None = None
        self._outcome: tuple[bool, list[Problem]] | BaseException | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name='sqlitedos-verify-integrity', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._connection = connect(self._database, read_only=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._outcome = exc
            return
        finally:
            self._opened.set()
        try:
            self._outcome = _check_database(self._connection)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._outcome = exc
        finally:
            self._connection.close()

    def cancel(self) -> None:
        """Stop the pragmas (the caller is failing) and wait for the thread; what it found is dropped."""
        self._opened.wait()
        if self._connection is not None:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed already: the pragmas are done
                self._connection.interrupt()
        self._thread.join()

    def result(self) -> tuple[bool, list[Problem]]:
        """(whether the database could be read, what SQLite found); re-raises what the thread raised."""
        self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome


def _repair(storage: SqliteDosStorage | str | os.PathLike[str], folder: Path) -> list[str]:
    """Delete the unreferenced objects under full maintenance's proof of exclusive use; the keys deleted."""
    container = folder / FILENAME_CONTAINER
    if not os.access(container, os.W_OK):
        raise ReadOnlyError(
            f'cannot repair {str(container)!r}: the container is read-only, so its unreferenced objects stay; run '
            '`verify --repair` where the storage is writable'
        )
    if isinstance(storage, SqliteDosStorage):
        return storage.delete_unreferenced_objects()
    opened = SqliteDosStorage(SqliteDosStorage.create_profile('verify-repair', filepath=folder))
    try:
        return opened.delete_unreferenced_objects()
    finally:
        opened.close()


def _check_pack_index(container: Path, report: VerifyReport) -> bool:
    """The container's ``packs.idx`` is a sound SQLite database (or absent); False if objects cannot be read."""
    index = container / PACKS_INDEX
    if not index.exists():
        return True  # disk-objectstore creates it on first use
    try:
        connection = connect(index, read_only=True)
        try:
            rows = [row[0] for row in connection.execute('PRAGMA integrity_check')]
            connection.execute('SELECT hashkey, pack_id, "offset", length FROM db_object LIMIT 1').fetchall()
        finally:
            connection.close()
    except (sqlite3.Error, CorruptStorage, UnreachableStorage) as exc:
        report.add('container', f'the pack index {str(index)!r} cannot be read ({exc}): restore it from a backup')
        return False
    if rows != ['ok']:
        report.problems.extend(Problem('container', f'{PACKS_INDEX} integrity_check: {row}') for row in rows)
        return False
    return True


def _check_repack_leftovers(container: Path, report: VerifyReport) -> bool:
    """Name what an interrupted repack left; False if index rows name the repack pack (objects then unreadable)."""
    from sqlitedos.repository.disk_objectstore import repack_leftovers

    leftovers = repack_leftovers(container)
    for leftover in leftovers:
        report.add('interrupted_repack', f'{leftover}: `sqlitedos maintain --full` finishes or undoes the repack')
    return not any('index row' in leftover for leftover in leftovers)


def _check_database(connection: sqlite3.Connection) -> tuple[bool, list[Problem]]:
    """SQLite's own checks: (whether the database could be read at all, the problems found)."""
    try:
        rows = [row[0] for row in connection.execute('PRAGMA integrity_check')]
    except sqlite3.DatabaseError as exc:
        return False, [Problem('database', f'the database cannot be read: {exc}')]
    problems = [] if rows == ['ok'] else [Problem('database', f'integrity_check: {row}') for row in rows]
    for table, rowid, parent, _ in connection.execute('PRAGMA foreign_key_check'):
        if table == 'db_dblink':
            continue  # reported with more detail as dangling links
        problems.append(Problem('foreign_key', f'{table} row {rowid} references a missing row of {parent}'))
    return True, problems


def _check_schema_version(connection: sqlite3.Connection, report: VerifyReport) -> bool:
    """The schema version is this code's; False if the database has none, or it cannot be read."""
    try:
        version = migrate.read_version(connection)
    except sqlite3.DatabaseError as exc:
        report.add('schema_version', f'the schema version cannot be read: {exc}')
        return False
    head = migrate.version_head()
    if version is None:
        report.add('schema_version', 'the database has no schema version (no alembic_version table)')
        return False
    if version != head:
        report.add('schema_version', f'the schema version is {version!r}, this code needs {head!r}: run `migrate`')
    return True


def _check_repository_uuid(connection: sqlite3.Connection, container: Path, report: VerifyReport) -> str | None:
    """The container id if the container is readable (a problem is added if it does not match the database)."""
    try:
        container_id = read_container_id(container)
    except (UnreachableStorage, CorruptStorage) as exc:
        report.add('container', str(exc))
        return None
    row = connection.execute(SELECT_REPOSITORY_UUID, (REPOSITORY_UUID_KEY,)).fetchone()
    if row is None:
        report.add('repository_uuid', 'the database has no repository UUID set')
    elif decode_json(row[0]) != container_id:
        report.add(
            'repository_uuid',
            f'the database names repository {decode_json(row[0])!r} but the container is {container_id!r}',
        )
    return container_id


def _suspect_links_query() -> tuple[str, list[Any]]:
    """``SELECT_SUSPECT_LINKS`` with one ``WHEN`` per rule of ``LINK_RULES``, and its parameters."""
    params: list[Any] = []
    for link, rule in LINK_RULES.items():
        source, target = KIND_PREFIXES[rule.source], KIND_PREFIXES[rule.target]
        params += [link.value, len(source), source, len(target), target]
    return SELECT_SUSPECT_LINKS.format(kinds=' '.join([LINK_KINDS_CASE] * len(LINK_RULES))), params


def _check_links(connection: sqlite3.Connection, report: VerifyReport) -> None:
    """Every link joins existing nodes of the kinds its type allows, within the degree rules (SPEC 3.2)."""
    labels = (label for (label,) in connection.execute(SELECT_DISTINCT_LABELS))
    connection.execute(CREATE_BAD_LABELS)
    connection.executemany(
        INSERT_BAD_LABEL, ((label,) for label in labels if isinstance(label, str) and not _valid_label(label))
    )
    for link_id, link_type, label, source, target, source_type, target_type in connection.execute(
        *_suspect_links_query()
    ):
        _report_link(report, link_id, link_type, label, source, target, source_type, target_type)
    (report.counts['links'],) = connection.execute(SELECT_LINK_COUNT).fetchone()
    _check_degrees(connection, report)


def _degree_passes() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per end, the link types to check always, and those to check only if the other end found a duplicate.

    Where one end's columns are a subset of the other's (input_calc: (output, label) within (input, output, label)),
    a duplicate at the larger end is also one at the smaller end: check the larger end only for types the smaller
    end flagged, which saves one pass over most links when nothing is wrong.
    """
    always: dict[str, list[str]] = {'out': [], 'in': []}
    if_flagged: dict[str, list[str]] = {'out': [], 'in': []}
    for link, rule in LINK_RULES.items():
        columns = {'out': set(DEGREE_COLUMNS['out'][rule.outdegree]), 'in': set(DEGREE_COLUMNS['in'][rule.indegree])}
        for end, other_end in (('out', 'in'), ('in', 'out')):
            larger = columns[other_end] < columns[end]
            (if_flagged if larger else always)[end].append(link.value)
    return always, if_flagged


def _check_degrees(connection: sqlite3.Connection, report: VerifyReport) -> None:
    """No two links of a type share the columns its degree rule makes unique at either end."""
    always, if_flagged = _degree_passes()
    flagged = {end: _degree_violations(connection, report, end, always[end]) for end in ('out', 'in')}
    for end, other_end in (('out', 'in'), ('in', 'out')):
        wanted = [kind for kind in if_flagged[end] if kind in flagged[other_end]]
        if wanted:
            _degree_violations(connection, report, end, wanted)


def _degree_violations(connection: sqlite3.Connection, report: VerifyReport, end: str, types: list[str]) -> set[str]:
    """Report the duplicates at ``end`` among links of ``types``; return the types that have one."""
    own, other = _end_columns(end)
    degrees = {link.value: getattr(rule, f'{end}degree') for link, rule in LINK_RULES.items()}
    with_label = [kind for kind in types if 'label' in DEGREE_COLUMNS[end][degrees[kind]]]
    with_other = [kind for kind in types if other in DEGREE_COLUMNS[end][degrees[kind]]]
    sql = SELECT_DEGREE_VIOLATIONS.format(own=own, other=other)  # names from links.DEGREE_COLUMNS
    params = (encode_json(with_label), encode_json(with_other), encode_json(types))
    found = set()
    for link_type, own_id, label, other_id, number in connection.execute(sql, params):
        degree = degrees[link_type]
        values = {own: own_id, other: other_id, 'label': label}
        what = ', '.join(f'{name}={values[name]!r}' for name in DEGREE_COLUMNS[end][degree])
        report.add('link_rule', f'{number} {link_type} links share {what} ({degree} at the {end} end)')
        found.add(link_type)
    return found


def _valid_label(label: Any) -> bool:
    try:
        validate_link_label(label)
    except (TypeError, ValueError):
        return False
    return True


def _end_columns(end: str) -> tuple[str, str]:
    """The node column of ``end`` ('out': ``input_id``) and of the other end, as ``DEGREE_COLUMNS`` names them."""
    own = DEGREE_COLUMNS[end]['unique'][0]
    (other,) = set(DEGREE_COLUMNS[end]['unique_triple']) - {own, 'label'}
    return own, other


def _report_link(
    report: VerifyReport,
    link_id: int,
    link_type: str,
    label: Any,
    source: int,
    target: int,
    source_type: str | None,
    target_type: str | None,
) -> None:
    """Word the problems of one link that ``SELECT_SUSPECT_LINKS`` picked out."""
    where = f'link {link_id} ({link_type} {label!r} from node {source} to node {target})'
    if source_type is None or target_type is None:
        missing = source if source_type is None else target
        report.add('dangling_link', f'{where}: node {missing} does not exist')
        return
    try:
        rule = LINK_RULES[LinkType(link_type)]
    except ValueError:
        report.add('link_rule', f'{where}: unknown link type')
        return
    if source == target:
        report.add('link_rule', f'{where}: links a node to itself')
    try:
        validate_link_label(label)
    except (TypeError, ValueError) as exc:
        report.add('link_rule', f'{where}: {exc}')
    if node_kind(source_type) != rule.source or node_kind(target_type) != rule.target:
        report.add(
            'link_rule',
            f'{where}: joins {source_type!r} to {target_type!r}, must join a {rule.source} to a {rule.target}',
        )


def _check_json(connection: sqlite3.Connection, report: VerifyReport) -> None:
    """Every JSON column holds valid JSON: a ``NaN`` written by an old tool breaks every filter on its table."""
    for table in TABLES.values():
        names = [column.name for column in table.columns if column.kind == 'json']
        if not names:
            continue
        columns = [quote_identifier(name) for name in names]
        checks = [f'({column} IS NOT NULL AND NOT json_valid({column}))' for column in columns]
        sql = SELECT_INVALID_JSON.format(
            columns=', '.join(checks), table=quote_identifier(table.name), invalid=' OR '.join(checks)
        )
        for row_id, *invalid in connection.execute(sql):
            bad = ', '.join(name for name, flag in zip(names, invalid) if flag)
            report.add('invalid_json', f'{table.name} row {row_id}: {bad} is not valid JSON')


def _temp_writes(connection: sqlite3.Connection) -> Any:
    """One transaction for many rows into a temporary table (each row its own transaction costs ~20 us)."""
    return Session(connection, file_backed=True, read_only=True).transaction('DEFERRED')


def _collect_referenced_keys(connection: sqlite3.Connection, report: VerifyReport) -> None:
    """Fill ``verify_referenced`` with every referenced key and one node naming it; malformed keys are reported."""
    nodes = 0
    last = None

    def well_formed() -> Iterator[tuple[str, int]]:
        nonlocal nodes, last
        for node_id, key in iter_repository_keys(connection):
            if node_id != last:
                nodes, last = nodes + 1, node_id
            if not isinstance(key, str) or len(key) != 64 or not _HEX_DIGITS.issuperset(key):
                report.add('repository_metadata', f'node {node_id} references a malformed key {key!r}')
                continue
            yield key, node_id

    connection.execute(CREATE_REFERENCED)
    with _temp_writes(connection):
        connection.executemany(INSERT_REFERENCED, well_formed())
    report.counts['nodes with files'] = nodes
    (report.counts['referenced objects'],) = connection.execute(SELECT_REFERENCED_COUNT).fetchone()


def _check_objects(
    connection: sqlite3.Connection, container_path: Path, report: VerifyReport, progress: Progress
) -> None:
    """Every referenced object exists and hashes to its key; list the unreferenced."""
    from sqlitedos.repository.disk_objectstore import open_container

    container = open_container(container_path, read_only=True)
    try:
        _hash_referenced(connection, container, container_path, report, progress)
        connection.execute(CREATE_PRESENT)
        with _temp_writes(connection):
            connection.executemany(INSERT_PRESENT, ((key,) for key in container.list_all_objects()))
        report.unreferenced = [key for (key,) in connection.execute(SELECT_UNREFERENCED)]
        (report.counts['container objects'],) = connection.execute(SELECT_PRESENT_COUNT).fetchone()
    finally:
        container.close()


def _hash_referenced(
    connection: sqlite3.Connection, container: Any, container_path: Path, report: VerifyReport, progress: Progress
) -> None:
    """Hash every referenced object in the order the objects lie on disk; report the missing and the corrupt.

    An uncompressed packed object is read straight from its slice of the pack, as the repository reads it; loose,
    compressed and unindexed objects go to disk-objectstore, ``HASH_BATCH`` at a time.
    """
    index = container_path / PACKS_INDEX
    if index.exists():
        connection.execute(CREATE_PACKED)
        pack_index = connect(index, read_only=True)
        try:
            with _temp_writes(connection):
                connection.executemany(INSERT_PACKED, pack_index.execute(SELECT_PACKED))
        finally:
            pack_index.close()
        cursor = connection.execute(SELECT_REFERENCED_IN_PACK_ORDER)
    else:
        cursor = connection.execute(SELECT_REFERENCED_IN_KEY_ORDER)
    total, done = report.counts['referenced objects'], 0
    pending: dict[str, int] = {}
    packs = _Packs(container_path / PACKS)
    try:
        for key, node_id, pack_id, offset, length, compressed in cursor:
            digest = None if pack_id is None or compressed else packs.hash_slice(pack_id, offset, length)
            if digest is None:
                pending[key] = node_id
                if len(pending) == HASH_BATCH:
                    done = _hash_through_container(container, pending, report, progress, done, total)
                continue
            if digest != key:
                report.add('corrupt_object', f'object {key} (node {node_id}) has content hashing to {digest}')
            done += 1
            if progress is not None:
                progress('Checking objects', done, total)
        if pending:
            _hash_through_container(container, pending, report, progress, done, total)
    finally:
        packs.close()


class _Packs:
    """The pack files, one open at a time (objects come pack by pack), read by slice."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pack_id: Any = None
        self.handle: Any = None

    def hash_slice(self, pack_id: Any, offset: int, length: int) -> str | None:
        """The sha256 of ``length`` bytes at ``offset`` of pack ``pack_id``; None if the pack cannot be opened."""
        if pack_id != self.pack_id:
            self.close()
            try:
                self.handle = open(self.folder / str(int(pack_id)), 'rb')  # noqa: SIM115 - closed in close()
            except (OSError, ValueError):
                return None
            self.pack_id = pack_id
        digest = hashlib.sha256()
        self.handle.seek(offset)
        while length > 0 and (chunk := self.handle.read(min(HASH_CHUNK, length))):
            digest.update(chunk)
            length -= len(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        self.pack_id = self.handle = None


def _hash_through_container(
    container: Any, pending: dict[str, int], report: VerifyReport, progress: Progress, done: int, total: int
) -> int:
    """Hash ``pending`` (key -> node) through disk-objectstore and empty it; report what it does not have."""
    with container.get_objects_stream_and_meta(list(pending), skip_if_missing=True) as triplets:
        for key, stream, _ in triplets:
            _hash_one(key, stream, pending.pop(key), report)
            done += 1
            if progress is not None:
                progress('Checking objects', done, total)
    for key, node_id in sorted(pending.items()):
        report.add('missing_object', f'object {key} referenced by node {node_id} is not in the container')
    pending.clear()
    return done


def _hash_one(key: str, stream: Any, node_id: int, report: VerifyReport) -> None:
    digest = hashlib.sha256()
    try:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    except Exception as exc:  # noqa: BLE001 - a damaged pack or zlib stream: report, go on
        report.add('corrupt_object', f'object {key} (node {node_id}) cannot be read: {exc}')
    else:
        if digest.hexdigest() != key:
            report.add('corrupt_object', f'object {key} (node {node_id}) has content hashing to {digest.hexdigest()}')
