"""What every storage backend shares: sessions, transactions, global variables, entity collections, bulk writes,
node deletion, ``get_info``, closing."""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from sqlitedos.db import (
    Session,
    decode_datetime,
    decode_json,
    encode_datetime,
    encode_json,
    new_uuid,
    now,
    translate_errors,
)
from sqlitedos.exceptions import ClosedStorage, IntegrityError, NotExistentKeyError, ValidationError
from sqlitedos.profile import Profile
from sqlitedos.query.backend import QueryBackend, QueryCache
from sqlitedos.tables import EntityTypes, Table, quote_identifier, table_for

if TYPE_CHECKING:
    from sqlitedos.entities import (
        BackendAuthInfoCollection,
        BackendCommentCollection,
        BackendComputerCollection,
        BackendEntity,
        BackendGroupCollection,
        BackendLogCollection,
        BackendNodeCollection,
        BackendUser,
        BackendUserCollection,
    )
    from sqlitedos.repository.abstract import AbstractRepositoryBackend

__all__ = ('Mapper', 'StorageBackend')

SELECT_SETTING = 'SELECT id, val FROM db_dbsetting WHERE "key" = ?'
UPDATE_SETTING = 'UPDATE db_dbsetting SET val = ?, time = ? WHERE id = ?'
INSERT_SETTING = 'INSERT INTO db_dbsetting ("key", val, description, time) VALUES (?, ?, ?, ?)'
SELECT_USER_BY_EMAIL = 'SELECT id FROM db_dbuser WHERE email = ?'
INSERT_USER = 'INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES (?, ?, ?, ?)'


def ensure_user(connection: sqlite3.Connection, email: str) -> int:
    """The id of the user with ``email``, inserting it (empty names) if absent; inside the caller's transaction."""
    row = connection.execute(SELECT_USER_BY_EMAIL, (email,)).fetchone()
    if row is not None:
        return row[0]
    return connection.execute(INSERT_USER + ' RETURNING id', (email, '', '', '')).fetchone()[0]


class Mapper(NamedTuple):
    """What ``_get_mapper_from_entity`` returns: a table name and column names (aiida returns a SQLAlchemy mapper)."""

    table: str
    columns: tuple[str, ...]


#: Columns that must be given to ``bulk_insert`` even with ``allow_defaults`` (no default exists for them).
_REQUIRED_COLUMNS = frozenset(
    {
        'email',
        'aiidauser_id',
        'dbcomputer_id@db_dbauthinfo',
        'user_id',
        'dbnode_id',
        'input_id',
        'output_id',
        'dbgroup_id',
        'loggername',
        'levelname',
    }
)
_MTIME_COLUMNS = {'db_dbnode': 'mtime', 'db_dbcomment': 'mtime'}
#: ``json.dumps`` with its defaults (aiida's format), minus two Python call layers per value on the bulk path.
#: ``allow_nan=False`` as in ``db.encode_json``: NaN/Infinity are not JSON and break every attribute filter.
_encode_json_fast = json.JSONEncoder(allow_nan=False).encode


def _bulk_encode_json(value: Any) -> str:
    if value.__class__ is dict and not value:
        return '{}'
    return _encode_json_fast(value)


def _memoised(encode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``encode`` remembering its last value only: bulk rows usually share a timestamp with the row before them, and
    a cache of every distinct value would grow with the rows (+190 MiB at a million distinct ctimes)."""
    last: list[Any] = [object(), None]  # [value, its encoding]

    def encode_cached(value: Any) -> Any:
        if value == last[0]:
            return last[1]
        encoded = encode(value)
        last[0], last[1] = value, encoded
        return encoded

    return encode_cached


def _bulk_encoders(plan: _BulkPlan) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """Fresh per-call encoders for the columns of ``plan`` that need one."""
    return tuple((index, _memoised(encode) if kind == 'datetime' else encode) for index, kind, encode in plan.encoded)


def _default_for(table: Table, name: str) -> Callable[[], Any]:
    """The factory of the value aiida fills in when ``name`` is not given (SPEC 2.7)."""
    kind = table.column(name).kind
    if kind == 'uuid':
        return new_uuid
    if kind == 'datetime':
        return now
    if kind == 'json':
        return dict
    if kind == 'bool':
        return lambda: True
    if table.column(name).nullable:
        return lambda: None
    if name in _REQUIRED_COLUMNS or f'{name}@{table.name}' in _REQUIRED_COLUMNS:

        def missing() -> Any:
            raise IntegrityError(f'Incorrect fields given for {table.name}: {name!r} is required and has no default')

        return missing
    return str


class _BulkPlan(NamedTuple):
    table: Table
    fields: tuple[str, ...]
    keyset: frozenset[str]
    insert_sql: str
    getter: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    encoded: tuple[tuple[int, str, Callable[[Any], Any]], ...]
    defaults: dict[str, Callable[[], Any]]


@functools.cache
def _bulk_plan(entity_type: EntityTypes) -> _BulkPlan:
    from sqlitedos.entities.base import ENCODERS, insert_sql

    table = table_for(entity_type)
    fields = tuple(name for name in table.column_names if name != 'id')
    kinds = [(index, table.column(name).kind) for index, name in enumerate(fields)]
    encoded = tuple(
        (index, kind, _bulk_encode_json if kind == 'json' else ENCODERS[kind])
        for index, kind in kinds
        if kind in ENCODERS
    )
    getter = operator.itemgetter(*fields) if len(fields) > 1 else (lambda row, _n=fields[0]: (row[_n],))
    defaults = {name: _default_for(table, name) for name in fields}
    return _BulkPlan(table, fields, frozenset(fields), insert_sql(table, fields), getter, encoded, defaults)


def _bulk_params(plan: _BulkPlan, rows: Sequence[Mapping[str, Any]], allow_defaults: bool) -> list[Sequence[Any]]:
    """The parameter tuples of ``rows``, checking key sets and filling defaults; nothing is written here."""
    keyset, getter, encoded = plan.keyset, plan.getter, _bulk_encoders(plan)
    params: list[Sequence[Any]] = []
    try:
        for row in rows:
            if row.keys() != keyset:
                if not allow_defaults or not keyset.issuperset(row.keys()):
                    raise IntegrityError(
                        f'Incorrect fields given for {plan.table.name}: {sorted(row)}; expected '
                        f'{"a subset of " if allow_defaults else ""}{sorted(keyset)}'
                    )
                row = {name: row[name] if name in row else plan.defaults[name]() for name in plan.fields}
            values: Any = getter(row)
            if encoded:
                values = list(values)
                for index, encode in encoded:
                    values[index] = encode(values[index])
            params.append(values)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f'a row for {plan.table.name} holds a value that cannot be stored: {exc}') from exc
    return params


def _collection(class_name: str) -> Any:
    """A cached property holding the storage's collection of class ``class_name`` (from ``sqlitedos.entities``)."""

    def collection(self: StorageBackend) -> Any:
        from sqlitedos import entities

        return getattr(entities, class_name)(self)

    return functools.cached_property(collection)


class StorageBackend:
    """Base class of the storage backends: a profile, per-thread sessions and the transaction API."""

    read_only: ClassVar[bool] = False
    #: aiida's cache of ``default_user`` (None until first asked for, and after ``reset_default_user``).
    _default_user: BackendUser | None = None

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._closed = False
        self._sessions: list[Session] = []
        self._sessions_lock = threading.Lock()
        self._default_user: BackendUser | None = None
        self._query_cache = QueryCache()
        self._queries = {
            flag: QueryBackend(self, self._query_cache, outer_filters_in_where=flag) for flag in (False, True)
        }

    # --- what every backend implements (aiida's ``StorageBackend`` names) -----------------------------------------
    # Declared here, with what each answers, so that code written against this class finds them; the backends
    # override every one. ``SqliteDosStorage`` alone adds ``backup`` and ``get_unreferenced_keyset``.

    @staticmethod
    def create_profile(*args: Any, **kwargs: Any) -> Profile:  # pragma: no cover - every backend overrides it
        """A ``Profile`` for a storage of this backend (its arguments depend on the backend)."""
        raise NotImplementedError

    @classmethod
    def version_head(cls) -> str:  # pragma: no cover - every backend overrides it
        """The schema version a storage of this backend is at once initialised or migrated."""
        raise NotImplementedError

    @classmethod
    def version_profile(cls, profile: Profile) -> str | None:  # pragma: no cover - every backend overrides it
        """The schema version of the profile's storage, or None if it is not initialised (nothing is created)."""
        raise NotImplementedError

    @classmethod
    def initialise(cls, profile: Profile, reset: bool = False) -> bool:  # pragma: no cover - every backend overrides
        """Create the profile's storage at the head version (with ``reset``, anew); True if it was created."""
        raise NotImplementedError

    @classmethod
    def migrate(cls, profile: Profile) -> None:  # pragma: no cover - every backend overrides it
        """Migrate the profile's storage to ``version_head()``."""
        raise NotImplementedError

    def get_repository(self) -> AbstractRepositoryBackend:  # pragma: no cover - every backend overrides it
        """The repository backend that holds the content of the storage's node files."""
        raise NotImplementedError

    def maintain(self, full: bool = False, dry_run: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Reclaim space (pack, vacuum); return what was (or, with ``dry_run``, would be) done, ``{}`` for nothing.

        ``full`` may need the storage to itself. A backend that cannot be maintained raises ``NotImplementedError``.
        """
        raise NotImplementedError(f'{type(self).__name__} cannot be maintained')

    def delete(self) -> None:
        """Delete the storage's data for good (what goes depends on the backend); refused where it cannot."""
        raise NotImplementedError(f'{type(self).__name__} cannot be deleted')

    # --- lifecycle --------------------------------------------------------------------------------------------

    @property
    def profile(self) -> Profile:
        return self._profile

    def version(self) -> str | None:
        """The schema version of this storage."""
        return self.version_profile(self._profile)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release every connection; idempotent. A closed storage object is never reopened."""
        if self._closed:
            return
        self._closed = True
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> StorageBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- sessions and transactions ------------------------------------------------------------------------------

    def _new_session(self) -> Session:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _describe(self) -> str:
        """The storage as a message names it (``str(self)`` is aiida's, with its state and a trailing comma)."""
        return f'the {type(self).__name__} storage of profile {self.profile.name!r}'

    def _session(self) -> Session:
        """The session of the calling thread; ``ClosedStorage`` once the storage is closed."""
        if self._closed:
            raise ClosedStorage(f'{self._describe()} is closed: open a new storage object to go on')
        return self._thread_session()

    def _cached_repository(self, create: Callable[[], Any]) -> Any:
        """The storage's repository backend, made by ``create()`` on first use; every thread gets the same one."""
        repository = self.__dict__.get('_repository')
        if repository is None:
            with self._sessions_lock:
                if self._closed:
                    raise ClosedStorage(f'{self._describe()} is closed: open a new storage object to go on')
                repository = self.__dict__.get('_repository')
                if repository is None:
                    repository = self._repository = create()
        return repository

    def _thread_session(self) -> Session:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _register(self, session: Session) -> Session:
        with self._sessions_lock:
            self._sessions.append(session)
        return session

    def _initialise_session(self) -> None:
        """Open the calling thread's connection now, rather than on first use (aiida creates its SQLAlchemy session
        factory here); a closed storage object is never reopened: ``ClosedStorage``."""
        self._session()

    @property
    def _session_factory(self) -> Callable[[], sqlite3.Connection] | None:
        """aiida's session factory: called, it gives the calling thread's connection; None once closed."""
        return None if self._closed else self.get_session

    def get_session(self) -> sqlite3.Connection:
        """The calling thread's ``sqlite3`` connection (aiida returns its SQLAlchemy session here)."""
        return self._session().connection

    def query(self, *, outer_filters_in_where: bool = False) -> QueryBackend:
        """The backend query builder: runs query dicts (``count``, ``first``, ``iterall``, ``iterdict``, ...).

        ``outer_filters_in_where``: answer ``outerjoin=True`` as aiida-core does (the outer vertex's filters in
        ``WHERE``), for code that relies on aiida's answers (the aiida plugin); by default they go into ``ON``.
        """
        return self._queries[bool(outer_filters_in_where)]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing block; nested blocks are savepoints. Outside it, every write commits at once."""
        with self._session().transaction() as connection:
            yield connection

    @property
    def in_transaction(self) -> bool:
        return not self._closed and self._thread_session().in_transaction

    # --- global variables ---------------------------------------------------------------------------------------

    def set_global_variable(self, key: str, value: Any, description: str | None = None, overwrite: bool = True) -> None:
        """Set a global variable (a row of ``db_dbsetting``); ``ValueError`` if it exists and not ``overwrite``."""
        encoded = encode_json(value)
        with self.transaction() as connection:
            row = connection.execute(SELECT_SETTING, (key,)).fetchone()
            if row is not None and not overwrite:
                raise ValueError(f'The setting {key} already exists')
            if row is not None:
                connection.execute(UPDATE_SETTING, (encoded, encode_datetime(now()), row[0]))
            else:
                connection.execute(INSERT_SETTING, (key, encoded, description or '', encode_datetime(now())))

    def get_global_variable(self, key: str) -> Any:
        """The value of a global variable; ``NotExistentKeyError`` (a ``KeyError``) if it is not set."""
        with translate_errors():
            row = self.get_session().execute(SELECT_SETTING, (key,)).fetchone()
        if row is None:
            raise NotExistentKeyError(f'No setting found with key {key}')
        return decode_json(row[1])

    # --- entities -----------------------------------------------------------------------------------------------

    users: BackendUserCollection = _collection('BackendUserCollection')
    computers: BackendComputerCollection = _collection('BackendComputerCollection')
    authinfos: BackendAuthInfoCollection = _collection('BackendAuthInfoCollection')
    nodes: BackendNodeCollection = _collection('BackendNodeCollection')
    groups: BackendGroupCollection = _collection('BackendGroupCollection')
    comments: BackendCommentCollection = _collection('BackendCommentCollection')
    logs: BackendLogCollection = _collection('BackendLogCollection')

    @property
    def default_user(self) -> BackendUser | None:
        """The user whose email is the profile's ``default_user_email`` (None if unset or absent); cached."""
        email = self._profile.default_user_email
        if self._default_user is None and email:
            found = self.users.find(email=email)
            self._default_user = found[0] if found else None
        return self._default_user

    def reset_default_user(self) -> None:
        """Forget the cached default user."""
        self._default_user = None

    def get_backend_entity(self, model: Any, orm_base: str | None = None) -> BackendEntity:
        """A backend entity from an entity (returned as is), or from a raw row and its orm_base or table name."""
        from sqlitedos.entities import TABLE_CLASSES, BackendEntity, build_entity

        if isinstance(model, BackendEntity):
            return model
        if not isinstance(model, Mapping) or orm_base is None:
            raise TypeError(f'get_backend_entity needs an entity, or a row mapping and its orm_base; got {model!r}')
        if orm_base in TABLE_CLASSES:
            return TABLE_CLASSES[orm_base].from_row(self, model)
        return build_entity(self, orm_base, dict(model))

    def _get_mapper_from_entity(self, entity_type: EntityTypes | str, with_pk: bool) -> Mapper:
        """The table and column names of an entity type (with or without ``id``)."""
        table = table_for(entity_type)
        columns = table.column_names if with_pk else tuple(name for name in table.column_names if name != 'id')
        return Mapper(table.name, columns)

    # --- bulk writes --------------------------------------------------------------------------------------------

    def bulk_insert(
        self, entity_type: EntityTypes | str, rows: Sequence[Mapping[str, Any]], allow_defaults: bool = False
    ) -> list[int]:
        """Insert rows (column -> Python value) in one statement; returns their new ids in row order.

        Without ``allow_defaults`` every row must give exactly the entity's columns (no ``id``); with it, a subset,
        the rest filled as aiida fills them. ``IntegrityError`` for a wrong key set; nothing is written then.
        """
        plan = _bulk_plan(EntityTypes(entity_type))
        if not rows:
            return []
        params = _bulk_params(plan, rows, allow_defaults)
        table = quote_identifier(plan.table.name)
        with self.transaction() as connection, translate_errors():
            (before,) = connection.execute(f'SELECT coalesce(max(id), 0) FROM {table}').fetchone()
            connection.executemany(plan.insert_sql, params)
            (after,) = connection.execute(f'SELECT max(id) FROM {table}').fetchone()
            if after != before + len(params):
                # Only when the largest rowid is taken does SQLite pick ids other than max+1, max+2, ...
                raise IntegrityError(f'{plan.table.name} ran out of sequential ids (largest id {before})')
        return list(range(before + 1, after + 1))

    def bulk_update(self, entity_type: EntityTypes | str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Update rows by ``id`` (each row: ``id`` plus a subset of the columns); ``mtime`` is refreshed."""
        plan = _bulk_plan(EntityTypes(entity_type))
        encoders: dict[str, Any] = dict.fromkeys(plan.fields)
        encoders.update({plan.fields[index]: encode for index, encode in _bulk_encoders(plan)})
        mtime = _MTIME_COLUMNS.get(plan.table.name)
        stamp = encode_datetime(now())
        batches: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in rows:
            if 'id' not in row or not plan.keyset.issuperset(key for key in row if key != 'id'):
                raise IntegrityError(
                    f'Incorrect fields given for {plan.table.name}: {sorted(row)}; expected `id` and a subset of '
                    f'{sorted(plan.keyset)}'
                )
            names = tuple(key for key in row if key != 'id')
            values = [row[name] if encoders[name] is None else encoders[name](row[name]) for name in names]
            if mtime and mtime not in names:
                names += (mtime,)
                values.append(stamp)
            batches.setdefault(names, []).append((*values, row['id']))
        if not batches:
            return
        from sqlitedos.entities.base import update_sql

        with self.transaction() as connection, translate_errors():
            for names, params in batches.items():
                if names:
                    connection.executemany(update_sql(plan.table, names), params)

    # --- deleting nodes ---------------------------------------------------------------------------------------

    def delete_nodes_and_connections(self, pks_to_delete: Sequence[int]) -> None:
        """Delete nodes with their group memberships and links (comments and logs cascade); only in a transaction.

        The caller computes a provenance-consistent set (``sqlitedos.graph.delete_nodes``). Repository files stay
        until ``maintain`` removes unreferenced objects.
        """
        if not self.in_transaction:
            raise AssertionError('Cannot delete nodes and links outside a transaction')
        encoded = encode_json(sorted({int(pk) for pk in pks_to_delete}))
        connection = self.get_session()
        with translate_errors():
            for sql in DELETE_NODES_AND_CONNECTIONS:
                connection.execute(sql, (encoded,))

    # --- information ------------------------------------------------------------------------------------------

    def get_orm_entities(self, detailed: bool = False) -> dict[str, Any]:
        """Counts (and with ``detailed`` distinct values) of every entity kind, as aiida reports them."""
        connection = self.get_session()

        def values(sql: str) -> list[Any]:
            return sorted({value for (value,) in connection.execute(sql) if value is not None})

        def count(table: str) -> int:
            return connection.execute(f'SELECT count(*) FROM {quote_identifier(table)}').fetchone()[0]

        with translate_errors():
            data: dict[str, Any] = {
                'Users': {'count': count('db_dbuser')},
                'Computers': {'count': count('db_dbcomputer')},
                'Nodes': {'count': count('db_dbnode')},
                'Groups': {'count': count('db_dbgroup')},
                'Comments': {'count': count('db_dbcomment')},
                'Logs': {'count': count('db_dblog')},
                'Links': {'count': count('db_dblink')},
            }
            if detailed:
                data['Users']['emails'] = values('SELECT email FROM db_dbuser')
                data['Computers']['labels'] = values('SELECT label FROM db_dbcomputer')
                first, last = connection.execute('SELECT min(ctime), max(ctime) FROM db_dbnode').fetchone()
                data['Nodes']['first_created'] = None if first is None else str(decode_datetime(first))
                data['Nodes']['last_created'] = None if last is None else str(decode_datetime(last))
                data['Nodes']['node_types'] = values('SELECT DISTINCT node_type FROM db_dbnode')
                data['Nodes']['process_types'] = [
                    value for value in values('SELECT DISTINCT process_type FROM db_dbnode') if value
                ]
                data['Groups']['type_strings'] = values('SELECT DISTINCT type_string FROM db_dbgroup')
        return data

    def _clear(self) -> None:
        """Delete all content (folder storage only; aiida's temp backend cannot either)."""
        raise NotImplementedError(f'{type(self).__name__} does not support clearing its content')

    def _repository_info(self, detailed: bool) -> dict[str, Any]:
        """The repository part of ``get_info`` (empty here; storages with a repository override it)."""
        return {}

    def get_info(self, detailed: bool = False) -> dict[str, Any]:
        """An overview of the storage: ``entities`` (and ``repository`` where the storage reports one)."""
        info: dict[str, Any] = {'entities': self.get_orm_entities(detailed)}
        repository = self._repository_info(detailed)
        if repository:
            info['repository'] = repository
        return info


DELETE_NODES_AND_CONNECTIONS = (
    'DELETE FROM db_dbgroup_dbnodes WHERE dbnode_id IN (SELECT value FROM json_each(?))',
    'DELETE FROM db_dblink WHERE input_id IN (SELECT value FROM json_each(?))',
    'DELETE FROM db_dblink WHERE output_id IN (SELECT value FROM json_each(?))',
    'DELETE FROM db_dbnode WHERE id IN (SELECT value FROM json_each(?))',
)
