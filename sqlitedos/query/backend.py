"""The storage's query object (``storage.query()``): runs compiled query dicts, with aiida's backend method names."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlitedos.db import translate_errors
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query.compiler import Compiled, compile_query, validate

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('QueryBackend', 'json_equal')

DEFAULT_BATCH_SIZE = 100
#: Compiled queries kept per storage, keyed by the query dict's JSON text (aiida re-sends the same dicts often).
COMPILE_CACHE_SIZE = 256

CREATION_TOTAL = 'SELECT COUNT(*) FROM db_dbnode'
CREATION_TYPES = 'SELECT node_type, COUNT(*) FROM db_dbnode GROUP BY node_type'
CREATION_DAYS = 'SELECT substr(ctime, 1, 10) AS day, COUNT(*) FROM db_dbnode GROUP BY day ORDER BY day'
USER_FILTER = ' WHERE user_id = ?'
MAX_NODE_ID = 'SELECT max(id) FROM db_dbnode'
DATA_VERSION = 'PRAGMA data_version'


def json_equal(left: Any, right: Any) -> int | None:
    """SQL ``sqlitedos_json_equal(a, b)``: 1 if JSON texts ``a`` and ``b`` are equal as JSON values (key order and
    spacing ignored, ``true`` distinct from ``1``), NULL if either is NULL."""
    from sqlitedos.db import decode_json
    from sqlitedos.query.operators import _json_equal

    if left is None or right is None:
        return None
    try:
        return int(_json_equal(decode_json(left), decode_json(right)))
    except ValueError:
        return 0


def prepare_connection(connection: sqlite3.Connection, sql: str) -> sqlite3.Connection:
    """Register the SQL function ``sql`` uses, once per connection (a function cannot be replaced while a
    statement of the connection is running, so it is never registered twice)."""
    if 'sqlitedos_json_equal' in sql:
        try:
            connection.execute('SELECT sqlitedos_json_equal(NULL, NULL)')
        except sqlite3.OperationalError:
            connection.create_function('sqlitedos_json_equal', 2, json_equal, deterministic=True)
    return connection


class QueryBackend:
    """aiida's ``BackendQueryBuilder`` for sqlitedos: each method takes a query dict."""

    def __init__(self, backend: StorageBackend) -> None:
        self._backend = backend

    # --- compiling ------------------------------------------------------------------------------------------------

    def _build_entity(self, orm_base: str, row: dict[str, Any]) -> Any:
        from sqlitedos.entities import build_entity  # lazily: the entities import the query layer's siblings

        return build_entity(self._backend, orm_base, row)

    def compile(self, data: dict) -> Compiled:
        """The compiled query, from the storage's cache when the same dict was compiled before.

        The key is the dict's JSON text: it tells ``True`` from ``1`` and ``1.0`` from ``1``; a dict that is not
        JSON (datetimes in filters, say) is compiled every time. Compiling is pure, so a cached result is exact.
        """
        try:
            key = json.dumps(data, check_circular=False)
        except (TypeError, ValueError):
            return compile_query(data, self._build_entity)
        cache: dict[str, Compiled] | None = getattr(self._backend, '_compiled_queries', None)
        if cache is None:
            cache = {}
            self._backend._compiled_queries = cache  # type: ignore[attr-defined]
        compiled = cache.get(key)
        if compiled is None:
            compiled = compile_query(data, self._build_entity)
            if len(cache) >= COMPILE_CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[key] = compiled
        return compiled

    def _sql(self, compiled: Compiled) -> str:
        """The SQL to run: the primary-key walk where the query allows it and the node type is common enough.

        Walking ids costs about ``needed * total / matching`` rows, sorting the type's nodes ``matching`` rows: the
        walk wins when ``matching`` exceeds ``sqrt(needed * total)``, counted (up to that bound, on the index) with a
        factor 4 of margin for the other filters.
        """
        walk = compiled.pk_walk
        if walk is None:
            return compiled.sql
        # The choice is remembered until the database changes (this connection's or another's commits): both
        # plans return the same rows, so a stale choice could only be slower, never wrong.
        connection = self._backend.get_session()
        stamp = (connection.total_changes, connection.execute(DATA_VERSION).fetchone()[0])
        choices: dict[Any, tuple[tuple[int, int], bool]] = self._backend.__dict__.setdefault('_plan_choices', {})
        key = (walk.probe.sql, walk.probe.params, walk.rows_needed)
        known = choices.get(key)
        if known is not None and known[0] == stamp:
            return walk.sql if known[1] else compiled.sql
        total = self._execute(MAX_NODE_ID, ()).fetchone()[0] or 0
        bound = min(math.isqrt(4 * walk.rows_needed * total) + 1, 2**63 - 1)
        (common,) = self._execute(walk.probe.sql, (*walk.probe.params, bound)).fetchone()
        if len(choices) >= COMPILE_CACHE_SIZE:
            del choices[next(iter(choices))]
        choices[key] = (stamp, common >= bound)
        return walk.sql if common >= bound else compiled.sql

    def _execute(self, sql: str, params: tuple) -> sqlite3.Cursor:
        connection = prepare_connection(self._backend.get_session(), sql)
        with translate_errors():
            return connection.execute(sql, params)

    # --- aiida's API ----------------------------------------------------------------------------------------------

    def count(self, data: dict) -> int:
        """The number of rows the query returns (honouring distinct, limit and offset)."""
        compiled = self.compile(data)
        return self._execute(f'SELECT COUNT(*) FROM ({compiled.sql})', compiled.params).fetchone()[0]

    def first(self, data: dict) -> list[Any] | None:
        """The first row (a list of the projected values), or None."""
        validate(data)
        limited = dict(data, limit=1)
        compiled = self.compile(limited)
        row = self._execute(self._sql(compiled), compiled.params).fetchone()
        return None if row is None else compiled.decode(row)

    def _rows(self, data: dict, batch_size: int | None) -> Iterator[tuple[Compiled, tuple]]:
        compiled = self.compile(data)
        cursor = self._execute(self._sql(compiled), compiled.params)
        size = batch_size or DEFAULT_BATCH_SIZE
        try:
            while True:
                with translate_errors():
                    rows = cursor.fetchmany(size)
                if not rows:
                    return
                for row in rows:
                    yield compiled, row
        finally:
            cursor.close()

    def iterall(self, data: dict, batch_size: int | None = DEFAULT_BATCH_SIZE) -> Iterator[list[Any]]:
        """Stream the rows as lists of projected values, fetching ``batch_size`` rows at a time."""
        for compiled, row in self._rows(data, batch_size):
            yield compiled.decode(row)

    def iterdict(self, data: dict, batch_size: int | None = DEFAULT_BATCH_SIZE) -> Iterator[dict[str, dict[str, Any]]]:
        """Stream the rows as ``{tag: {key: value}}`` dicts."""
        for compiled, row in self._rows(data, batch_size):
            yield compiled.decode_dict(row)

    def all(self, data: dict) -> list[list[Any]]:
        """Every row at once (one ``fetchall``)."""
        compiled = self.compile(data)
        rows = self._execute(self._sql(compiled), compiled.params).fetchall()
        return [compiled.decode(row) for row in rows]

    def as_sql(self, data: dict, inline: bool = False) -> str:
        """The SQL text; with ``inline`` the parameters are rendered into it, for display only."""
        compiled = self.compile(data)
        if not inline:
            return compiled.sql
        return render_inline(compiled.sql, compiled.params)

    def analyze_query(self, data: dict, execute: bool = True, verbose: bool = False) -> str:
        """SQLite's ``EXPLAIN QUERY PLAN`` of the query as it would run now, one step per line (indented by depth)."""
        compiled = self.compile(data)
        rows = self._execute(f'EXPLAIN QUERY PLAN {self._sql(compiled)}', compiled.params).fetchall()
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
        where, params = (USER_FILTER, (user_pk,)) if user_pk is not None else ('', ())
        total = self._execute(CREATION_TOTAL + where, params).fetchone()[0]
        types = dict(self._execute(CREATION_TYPES.replace(' GROUP', where + ' GROUP'), params).fetchall())
        days = self._execute(CREATION_DAYS.replace(' GROUP', where + ' GROUP'), params).fetchall()
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
