"""The storage's query object (``storage.query()``): runs query dicts, with aiida's backend method names.

A query dict is parsed and compiled once per storage (``QueryCache``, owned by the storage); ``prepare()`` returns a
``PreparedQuery`` that runs the same compiled statement again without looking at the dict. Rows are decoded here and
entities (``*`` projections) built here, from the cells the compiler describes.
"""

from __future__ import annotations

import gc
import marshal
import math
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sqlitedos.db import translate_errors
from sqlitedos.entities import build_entity
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query.compiler import Compiled, LinkScan, compile_query
from sqlitedos.query.parse import parse_query, refusing_self_holding
from sqlitedos.query.projections import Projection, decode_json_value

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('PreparedQuery', 'QueryBackend', 'QueryCache', 'RowReader')

DEFAULT_BATCH_SIZE = 100
#: Compiled queries (and plan choices) kept per storage; aiida re-sends the same dicts often.
COMPILE_CACHE_SIZE = 256

CREATION_TOTAL = 'SELECT COUNT(*) FROM db_dbnode'
CREATION_TOTAL_OF_USER = 'SELECT COUNT(*) FROM db_dbnode WHERE user_id = ?'
CREATION_TYPES = 'SELECT node_type, COUNT(*) FROM db_dbnode GROUP BY node_type'
CREATION_TYPES_OF_USER = 'SELECT node_type, COUNT(*) FROM db_dbnode WHERE user_id = ? GROUP BY node_type'
CREATION_DAYS = 'SELECT substr(ctime, 1, 10) AS day, COUNT(*) FROM db_dbnode GROUP BY day ORDER BY day'
CREATION_DAYS_OF_USER = (
    'SELECT substr(ctime, 1, 10) AS day, COUNT(*) FROM db_dbnode WHERE user_id = ? GROUP BY day ORDER BY day'
)
MAX_NODE_ID = 'SELECT max(id) FROM db_dbnode'
MAX_LINK_ID = 'SELECT max(id) FROM db_dblink'
DATA_VERSION = 'PRAGMA data_version'

Row = list[Any]
RowDict = dict[str, dict[str, Any]]


class _Bounded(OrderedDict):
    """A dict that forgets its oldest entry beyond ``size`` entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


def query_key(data: Any) -> bytes | None:
    """The exact key of a query dict in the compile caches, or None if it holds values other than the built-in ones
    (datetimes in filters, say: such a dict is compiled every time).

    ``marshal`` writes every value with its exact type (``True``, ``1`` and ``1.0`` differ, as do ``[1]`` and
    ``(1,)``, ``{1: ...}`` and ``{'1': ...}``; subclasses are refused) and every dict in its order, and what it writes
    loads back to an equal value: equal keys are equal dicts. Format 2, the last without back-references: later
    formats write a shared object once and refer to it, which depends on reference counts, so the same dict could
    get a different key on the next call. About 2.7 us for W4 e1's dict, where ``json.dumps`` took 9.
    """
    try:
        return marshal.dumps(data, 2)
    except ValueError:  # a type marshal does not write, or nesting too deep (a dict that holds itself)
        return None


class QueryCache:
    """What a storage remembers about queries: prepared statements by query-dict key (``query_key``), and plan
    choices.

    Compiling is pure, so a cached statement is exact. A plan choice is remembered with the database's change
    stamp: both plans return the same rows, so a stale choice could only be slower, never wrong.
    """

    def __init__(self, size: int = COMPILE_CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._prepared: _Bounded = _Bounded(size)
        self._plans: _Bounded = _Bounded(size)

    def prepared(self, key: Any) -> PreparedQuery | None:
        return self._prepared.get(key)

    def remember_prepared(self, key: Any, prepared: PreparedQuery) -> None:
        with self._lock:
            self._prepared.put(key, prepared)

    def plan(self, key: Any, stamp: tuple[int, int]) -> bool | None:
        known = self._plans.get(key)
        return known[1] if known is not None and known[0] == stamp else None

    def remember_plan(self, key: Any, stamp: tuple[int, int], walk: bool) -> None:
        with self._lock:
            self._plans.put(key, (stamp, walk))


class RowReader:
    """A compiled query with its row decoder: cells -> projected values, entities built by ``build``."""

    def __init__(self, compiled: Compiled, build: Callable[[str, dict[str, Any]], Any]) -> None:
        self.compiled = compiled
        projections = compiled.projections
        self._plan = _decode_plan(projections, build)
        self._all_plain = all(projection.plain for projection in projections)
        self._single_typed = len(projections) == 1 and projections[0].typed

    def row(self, row: tuple) -> Row:
        """A result row -> the projected values in order."""
        if self._all_plain:
            return list(row)
        return [decode(row, index) for decode, index in self._plan]

    def rows(self, rows: list[tuple]) -> list[Row]:
        """Many rows at once (the common shapes without a call per value)."""
        if self._all_plain:
            return [[*row] for row in rows]  # a list display: ~40% less than list(map(list, rows)) a row
        if self._single_typed:
            # A plain JSON string (the common projection of one attribute) is cut out inline, no call per row.
            decode = decode_json_value
            return [
                [text[1:-1]] if text is not None and text[:1] == '"' and '\\' not in text else [decode(text)]
                for (text,) in rows
            ]
        plan = self._plan
        return [[decode(row, index) for decode, index in plan] for row in rows]

    def row_dict(self, row: tuple) -> RowDict:
        """A result row -> ``{tag: {key: value}}`` with ``project_map`` applied to the keys."""
        out: RowDict = {}
        project_map = self.compiled.project_map
        for projection, value in zip(self.compiled.projections, self.row(row)):
            key = project_map.get(projection.tag, {}).get(projection.key, projection.key)
            out.setdefault(projection.tag, {})[key] = value
        return out


def _decode_plan(
    projections: tuple[Projection, ...], build: Callable[[str, dict[str, Any]], Any]
) -> list[tuple[Callable[[tuple, int], Any], int]]:
    plan = []
    start = 0
    for projection in projections:
        decode = projection.decode
        if projection.entity is not None:
            decode = _entity_decoder(projection.entity, decode, build)
        plan.append((decode, start))
        start += len(projection.cells)
    return plan


def _entity_decoder(
    orm_base: str, cells: Callable[[tuple, int], Any], build: Callable[[str, dict[str, Any]], Any]
) -> Callable[[tuple, int], Any]:
    def decode(row: tuple, index: int) -> Any:
        return build(orm_base, cells(row, index))

    return decode


class PreparedQuery:
    """A query parsed and compiled once, run as often as needed (``all``, ``iterall``, ``first``, ``count`` ...)."""

    def __init__(self, backend: QueryBackend, reader: RowReader) -> None:
        self._backend = backend
        self._reader = reader
        compiled = reader.compiled
        self._sql = compiled.sql
        self._params = compiled.params
        self._count_sql = compiled.count_sql
        self._plain = compiled.pk_walk is None and compiled.link_scan is None

    @property
    def compiled(self) -> Compiled:
        return self._reader.compiled

    def _statement(self) -> str:
        return self._sql if self._plain else self._backend._choose_plan(self._reader.compiled)

    def all(self) -> list[Row]:
        """Every row at once (one ``fetchall``)."""
        connection = self._backend._connection()
        # Rows and their lists hold no cycles, but creating 100k of them runs Python's cyclic collector over and
        # over (W4 d, 64k rows: 10 ms of 86): it is paused while the result is built (inline, not a context
        # manager, which would cost a short query 1 us), resumed even on errors, left off if the caller turned it
        # off. Reference counting frees everything as usual.
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            rows = connection.execute(self._statement(), self._params).fetchall()
            return self._reader.rows(rows)
        except sqlite3.Error:
            with translate_errors():
                raise
            raise  # pragma: no cover - translate_errors re-raises what it does not map
        finally:
            if collecting:
                gc.enable()

    def count(self) -> int:
        """The number of rows (honouring distinct, limit and offset)."""
        return self._backend._execute(self._count_sql, self._params).fetchone()[0]

    def first(self) -> Row | None:
        """The first row, or None (prepare the query with ``limit=1`` to let SQLite stop early)."""
        cursor = self._backend._execute(self._statement(), self._params)
        try:
            with translate_errors():
                row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else self._reader.row(row)

    def _cursor_rows(self, batch_size: int | None) -> Iterator[tuple]:
        cursor = self._backend._execute(self._statement(), self._params)
        size = batch_size or DEFAULT_BATCH_SIZE
        try:
            while True:
                with translate_errors():
                    rows = cursor.fetchmany(size)
                if not rows:
                    return
                yield from rows
        finally:
            cursor.close()

    def iterall(self, batch_size: int | None = DEFAULT_BATCH_SIZE) -> Iterator[Row]:
        """Stream the rows as lists of projected values, fetching ``batch_size`` rows at a time."""
        row = self._reader.row
        for cells in self._cursor_rows(batch_size):
            yield row(cells)

    def iterdict(self, batch_size: int | None = DEFAULT_BATCH_SIZE) -> Iterator[RowDict]:
        """Stream the rows as ``{tag: {key: value}}`` dicts."""
        row_dict = self._reader.row_dict
        for cells in self._cursor_rows(batch_size):
            yield row_dict(cells)


class QueryBackend:
    """aiida's ``BackendQueryBuilder`` for sqlitedos: each method takes a query dict."""

    def __init__(self, backend: StorageBackend, cache: QueryCache, *, outer_filters_in_where: bool = False) -> None:
        self._backend = backend
        self._cache = cache
        self._outer_filters_in_where = outer_filters_in_where

    # --- compiling ------------------------------------------------------------------------------------------------

    def _build_entity(self, orm_base: str, row: dict[str, Any]) -> Any:
        return build_entity(self._backend, orm_base, row)

    def _scoped(self, key: bytes | None) -> Any:
        """A dict's key in the storage's cache: the aiida-compatible outer joins compile differently, kept apart."""
        return ('outer-filters-in-where', key) if key is not None and self._outer_filters_in_where else key

    def compile(self, data: dict) -> Compiled:
        """The compiled query (SQL, parameters, projections)."""
        return self.prepare(data).compiled

    def prepare(self, data: dict, *, key: bytes | None = None) -> PreparedQuery:
        """Parse and compile ``data`` once, or take it from the storage's cache when the same dict was seen before;
        run the result as often as needed. Later changes to ``data`` are not seen. ``key``: ``query_key(data)``, if
        the caller has it already."""
        scoped = self._scoped(query_key(data) if key is None else key)
        prepared = self._cache.prepared(scoped) if scoped is not None else None
        if prepared is None:
            compiled = compile_query(
                refusing_self_holding(parse_query, data), outer_filters_in_where=self._outer_filters_in_where
            )
            prepared = PreparedQuery(self, RowReader(compiled, self._build_entity))
            if scoped is not None:
                self._cache.remember_prepared(scoped, prepared)
        return prepared

    def prepared(self, key: bytes) -> PreparedQuery | None:
        """The prepared query of the dict whose ``query_key`` is ``key``, if the storage's cache holds it."""
        return self._cache.prepared(self._scoped(key))

    def _choose_plan(self, compiled: Compiled) -> str:
        """The SQL to run: the walk in the order asked for (primary key, or the ctime/mtime index) where the query
        allows it and the node type is common enough, and common where the walk starts; or the link scan
        (``_choose_link_scan``).

        Walking costs about ``needed * total / matching`` rows if the type is spread evenly, sorting the type's
        nodes ``matching`` rows: the walk wins when ``matching`` exceeds ``bound = sqrt(needed * total)``, counted
        (up to that bound, on the index) with a factor 4 of margin for the other filters. Types are often not spread
        evenly (the newest nodes are all calculations, say), so the first ``bound`` rows of a ctime/mtime walk (a
        row lookup per index entry) must also hold the ``needed`` rows. The choice is remembered until the database
        changes (this connection's commits or another's).
        """
        walk = compiled.pk_walk
        if walk is None:
            return compiled.sql if compiled.link_scan is None else self._choose_link_scan(compiled.link_scan, compiled)
        stamp = self._stamp()
        key = (walk.sql, walk.probe.params, walk.rows_needed)
        known = self._cache.plan(key, stamp)
        if known is None:
            total = self._execute(MAX_NODE_ID, ()).fetchone()[0] or 0
            bound = min(math.isqrt(4 * walk.rows_needed * total) + 1, 2**63 - 1)
            (common,) = self._execute(walk.probe.sql, (*walk.probe.params, bound)).fetchone()
            known = common >= bound
            if known and walk.index is not None:
                # Common, but maybe not where an index walk starts (the newest nodes of other types, say): it must
                # find the rows it needs within the same bound of rows read. (The primary-key walk reads rows in
                # storage order, several times cheaper a row than the type index plan: it is not held to this.)
                prefix = walk.prefix_probe
                (found,) = self._execute(prefix.sql, (bound, *prefix.params)).fetchone()
                known = found >= walk.rows_needed
            self._cache.remember_plan(key, stamp, known)
        return walk.sql if known else compiled.sql

    def _stamp(self) -> tuple[int, int]:
        """What changes when the database does: this connection's changes and SQLite's ``data_version``."""
        connection = self._connection()
        return (connection.total_changes, connection.execute(DATA_VERSION).fetchone()[0])

    def _choose_link_scan(self, scan: LinkScan, compiled: Compiled) -> str:
        """The SQL to run for two typed nodes joined by a link: the link scan when the input end's type is common.

        The type index plan costs about three lookups per node of the type it starts from (the link's input end),
        the scan two per link: the scan is used when that type has at least half as many nodes as there are links
        (counted up to that bound on the type index). Remembered until the database changes, as the walks are.
        """
        stamp = self._stamp()
        key = (scan.sql, compiled.params)
        known = self._cache.plan(key, stamp)
        if known is None:
            links = self._execute(MAX_LINK_ID, ()).fetchone()[0] or 0
            bound = links // 2 + 1
            (common,) = self._execute(scan.probe.sql, (*scan.probe.params, bound)).fetchone()
            known = links > 0 and common >= bound
            self._cache.remember_plan(key, stamp, known)
        return scan.sql if known else compiled.sql

    def _connection(self) -> sqlite3.Connection:
        return self._backend.get_session()

    def _execute(self, sql: str, params: tuple) -> sqlite3.Cursor:
        with translate_errors():
            return self._connection().execute(sql, params)

    # --- aiida's API ----------------------------------------------------------------------------------------------

    def count(self, data: dict) -> int:
        """The number of rows the query returns (honouring distinct, limit and offset)."""
        return self.prepare(data).count()

    def first(self, data: dict) -> Row | None:
        """The first row (a list of the projected values), or None."""
        refusing_self_holding(parse_query, data)  # a bad dict is refused as such, before ``limit`` is changed
        return self.prepare(dict(data, limit=1)).first()

    def iterall(self, data: dict, batch_size: int | None = DEFAULT_BATCH_SIZE) -> Iterator[Row]:
        """Stream the rows as lists of projected values, fetching ``batch_size`` rows at a time."""
        return self.prepare(data).iterall(batch_size)

    def iterdict(self, data: dict, batch_size: int | None = DEFAULT_BATCH_SIZE) -> Iterator[RowDict]:
        """Stream the rows as ``{tag: {key: value}}`` dicts."""
        return self.prepare(data).iterdict(batch_size)

    def all(self, data: dict) -> list[Row]:
        """Every row at once (one ``fetchall``)."""
        return self.prepare(data).all()

    def as_sql(self, data: dict, inline: bool = False) -> str:
        """The SQL text; with ``inline`` the parameters are rendered into it, for display only."""
        compiled = self.compile(data)
        return render_inline(compiled.sql, compiled.params) if inline else compiled.sql

    def analyze_query(self, data: dict, execute: bool = True, verbose: bool = False) -> str:
        """SQLite's ``EXPLAIN QUERY PLAN`` of the query as it would run now, one step per line (indented by depth)."""
        compiled = self.compile(data)
        rows = self._execute(f'EXPLAIN QUERY PLAN {self._choose_plan(compiled)}', compiled.params).fetchall()
        depth: dict[int, int] = {0: -1}
        lines = []
        for node_id, parent, _, detail in rows:
            depth[node_id] = depth.get(parent, -1) + 1
            lines.append('  ' * depth[node_id] + str(detail))
        return '\n'.join(lines)

    def get_creation_statistics(self, user_pk: int | None = None) -> dict[str, Any]:
        """aiida's node statistics: ``total``, ``types`` (node_type -> count), ``ctime_by_day`` (date -> count)."""
        if user_pk is not None and (isinstance(user_pk, bool) or not isinstance(user_pk, int)):
            raise InputValidationError(f'user_pk must be an int, not {user_pk!r}')
        params: tuple[int, ...] = ()
        if user_pk is None:
            statements = (CREATION_TOTAL, CREATION_TYPES, CREATION_DAYS)
        else:
            statements, params = (CREATION_TOTAL_OF_USER, CREATION_TYPES_OF_USER, CREATION_DAYS_OF_USER), (user_pk,)
        total = self._execute(statements[0], params).fetchone()[0]
        types = dict(self._execute(statements[1], params).fetchall())
        days = self._execute(statements[2], params).fetchall()
        return {'total': total, 'types': types, 'ctime_by_day': {day: count for day, count in days}}


def render_inline(sql: str, params: tuple) -> str:
    """SQL with its ``?`` placeholders replaced by literals: for reading, never for running."""
    pieces = sql.split('?')
    if len(pieces) != len(params) + 1:
        return f'{sql} -- params: {params!r}'
    out = [pieces[0]]
    for value, piece in zip(params, pieces[1:]):
        if value is None:
            literal = 'NULL'
        elif isinstance(value, (int, float)):
            literal = repr(value)
        else:
            literal = "'" + str(value).replace("'", "''") + "'"
        out.extend([literal, piece])
    return ''.join(out)
