"""Integrity checks of a storage folder: the database, the container, and the tie between them.

``verify(storage)`` reads only; ``verify(storage, repair=True)`` also deletes the container objects that no node
references (the one repair that can never lose data), and reports what it did. Everything else it finds needs a
person: restore the object or the database from a backup.

``repair`` takes exactly the proof that full maintenance takes (``SqliteDosStorage.exclusive_use``): it refuses with
``LockedProfileError`` while any other process (aiida-core's included) or connection has the storage open, and it
recomputes the unreferenced objects under that lock before deleting them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlitedos import migrate
from sqlitedos.db import connect, decode_json
from sqlitedos.exceptions import CorruptStorage, UnreachableStorage
from sqlitedos.links import LINK_RULES, LinkType, node_kind, validate_link_label
from sqlitedos.storage.sqlite_dos import (
    FILENAME_CONTAINER,
    FILENAME_DATABASE,
    REPOSITORY_UUID_KEY,
    SELECT_REPOSITORY_UUID,
    SqliteDosStorage,
)

__all__ = ('Problem', 'VerifyReport', 'iter_repository_keys', 'verify')

Progress = Callable[[str, int, int], None] | None

HASH_CHUNK = 1024 * 1024
PACKS_INDEX = 'packs.idx'

SELECT_REPOSITORY_METADATA = 'SELECT id, repository_metadata FROM db_dbnode'
SELECT_LINKS_WITH_NODES = """
    SELECT l.id, l.type, l.label, l.input_id, l.output_id, s.node_type, t.node_type
    FROM db_dblink AS l
    LEFT JOIN db_dbnode AS s ON s.id = l.input_id
    LEFT JOIN db_dbnode AS t ON t.id = l.output_id
"""
#: Degree rules (SPEC 3.2) as the columns that must be unique together among links of one type, at one end.
DEGREE_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    'out': {
        'unique': ('input_id',),
        'unique_pair': ('input_id', 'label'),
        'unique_triple': ('input_id', 'output_id', 'label'),
    },
    'in': {
        'unique': ('output_id',),
        'unique_pair': ('output_id', 'label'),
        'unique_triple': ('output_id', 'input_id', 'label'),
    },
}
SELECT_DEGREE_VIOLATIONS = """
    SELECT {columns}, COUNT(*) FROM db_dblink WHERE type = ? GROUP BY {columns} HAVING COUNT(*) > 1
"""


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
        for key in iter_file_keys(decode_json(cell) if cell else {}):
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
        if not _check_database(connection, report):
            return report
        container_id = _check_repository_uuid(connection, folder / FILENAME_CONTAINER, report)
        _check_links(connection, report)
        referenced = _referenced_keys(connection, report)
    finally:
        connection.close()
    if container_id is not None:
        container = folder / FILENAME_CONTAINER
        if _check_pack_index(container, report) and _check_repack_leftovers(container, report):
            _check_objects(container, referenced, report, progress)
    if repair and report.unreferenced:
        report.repaired = _repair(storage, folder)
    return report


def _repair(storage: SqliteDosStorage | str | os.PathLike[str], folder: Path) -> list[str]:
    """Delete the unreferenced objects under full maintenance's proof of exclusive use; the keys deleted."""
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
        connection = sqlite3.connect(f'{index.absolute().as_uri()}?mode=ro', uri=True)
        try:
            rows = [row[0] for row in connection.execute('PRAGMA integrity_check')]
            connection.execute('SELECT hashkey, pack_id, "offset", length FROM db_object LIMIT 1').fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
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


def _check_database(connection: sqlite3.Connection, report: VerifyReport) -> bool:
    """SQLite's own checks and the schema version; False if the database cannot be examined further."""
    try:
        rows = [row[0] for row in connection.execute('PRAGMA integrity_check')]
    except sqlite3.DatabaseError as exc:
        report.add('database', f'the database cannot be read: {exc}')
        return False
    if rows != ['ok']:
        report.problems.extend(Problem('database', f'integrity_check: {row}') for row in rows)
    for table, rowid, parent, _ in connection.execute('PRAGMA foreign_key_check'):
        if table == 'db_dblink':
            continue  # reported with more detail as dangling links
        report.add('foreign_key', f'{table} row {rowid} references a missing row of {parent}')
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
    from sqlitedos.repository.disk_objectstore import read_container_id

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


def _check_links(connection: sqlite3.Connection, report: VerifyReport) -> None:
    """Every link joins existing nodes of the kinds its type allows, within the degree rules (SPEC 3.2)."""
    count = 0
    for link_id, link_type, label, source, target, source_type, target_type in connection.execute(
        SELECT_LINKS_WITH_NODES
    ):
        count += 1
        where = f'link {link_id} ({link_type} {label!r} from node {source} to node {target})'
        if source_type is None or target_type is None:
            missing = source if source_type is None else target
            report.add('dangling_link', f'{where}: node {missing} does not exist')
            continue
        try:
            rule = LINK_RULES[LinkType(link_type)]
        except ValueError:
            report.add('link_rule', f'{where}: unknown link type')
            continue
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
    report.counts['links'] = count
    for link_type, rule in LINK_RULES.items():
        for end, degree in (('out', rule.outdegree), ('in', rule.indegree)):
            columns = DEGREE_COLUMNS[end][degree]
            sql = SELECT_DEGREE_VIOLATIONS.format(columns=', '.join(columns))  # names from the table above
            for *values, number in connection.execute(sql, (link_type.value,)):
                what = ', '.join(f'{name}={value!r}' for name, value in zip(columns, values))
                report.add('link_rule', f'{number} {link_type.value} links share {what} ({degree} at the {end} end)')


def _referenced_keys(connection: sqlite3.Connection, report: VerifyReport) -> dict[str, int]:
    """Every referenced key with one node that references it; malformed keys are reported."""
    referenced: dict[str, int] = {}
    nodes = set()
    for node_id, key in iter_repository_keys(connection):
        nodes.add(node_id)
        if not isinstance(key, str) or len(key) != 64 or any(c not in '0123456789abcdef' for c in key):
            report.add('repository_metadata', f'node {node_id} references a malformed key {key!r}')
            continue
        referenced.setdefault(key, node_id)
    report.counts['nodes with files'] = len(nodes)
    report.counts['referenced objects'] = len(referenced)
    return referenced


def _check_objects(container_path: Path, referenced: dict[str, int], report: VerifyReport, progress: Progress) -> None:
    """Every referenced object exists and hashes to its key; list the unreferenced."""
    from sqlitedos.repository.disk_objectstore import open_container

    container = open_container(container_path)
    try:
        keys = sorted(referenced)
        present = set()
        total = len(keys)
        # Streams come pack by pack in offset order, so a packed container is read sequentially.
        with container.get_objects_stream_and_meta(keys, skip_if_missing=True) as triplets:
            for done, (key, stream, _) in enumerate(triplets, 1):
                present.add(key)
                digest = hashlib.sha256()
                try:
                    while chunk := stream.read(HASH_CHUNK):
                        digest.update(chunk)
                except Exception as exc:  # noqa: BLE001 - a damaged pack or zlib stream: report, go on
                    report.add('corrupt_object', f'object {key} (node {referenced[key]}) cannot be read: {exc}')
                else:
                    if digest.hexdigest() != key:
                        report.add(
                            'corrupt_object',
                            f'object {key} (node {referenced[key]}) has content hashing to {digest.hexdigest()}',
                        )
                if progress is not None:
                    progress('Checking objects', done, total)
        for key in keys:
            if key not in present:
                report.add(
                    'missing_object', f'object {key} referenced by node {referenced[key]} is not in the container'
                )
        report.unreferenced = sorted(set(container.list_all_objects()) - set(referenced))
        report.counts['container objects'] = len(present) + len(report.unreferenced)
    finally:
        container.close()
