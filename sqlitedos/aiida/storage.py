"""The storage plugins: ``sqlitedos.dos`` (a storage folder) and ``sqlitedos.temp`` (in memory).

Each class is sqlitedos' storage (first in the MRO: its code runs) and aiida's ``StorageBackend`` (second: aiida's
front end accepts it). The few places where aiida's contract differs from sqlitedos' own API are written here:
aiida's enums, its ORM ``default_user``, its profile lock for full maintenance, and its backup folder checks.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import uuid4

from aiida.common.pydantic import AiiDABaseModel, MetadataField
from aiida.orm.implementation import StorageBackend as AiidaStorageBackend
from pydantic import field_validator

from sqlitedos.aiida import entities
from sqlitedos.aiida.errors import translated_errors, translating_methods
from sqlitedos.aiida.querybuilder import SqlitedosQueryBuilder
from sqlitedos.aiida.repository import SqlitedosContainerRepository, SqlitedosSandboxRepository
from sqlitedos.storage.sqlite_dos import SqliteDosStorage as SqlitedosFolderStorage
from sqlitedos.storage.sqlite_temp import SqliteTempBackend as SqlitedosTempStorage

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend as _StorageBase  # what the mixin below is mixed into
else:
    _StorageBase = object

__all__ = ('SqliteDosStorage', 'SqliteTempStorage')

ENTRY_POINT_DOS = 'sqlitedos.dos'
ENTRY_POINT_TEMP = 'sqlitedos.temp'


def _collection(cls: type) -> functools.cached_property:
    def collection(self: Any) -> Any:
        return cls(self)

    return functools.cached_property(collection)


def _value(entity_type: Any) -> str:
    """The string value of an entity type (aiida's ``EntityTypes`` enum, sqlitedos' or a plain string)."""
    return getattr(entity_type, 'value', entity_type)


class _PluginStorage(_StorageBase):
    """What both plugins add to sqlitedos' storage classes to meet aiida's ``StorageBackend`` contract."""

    #: aiida's ``default_user`` caches its ORM ``User`` here (sqlitedos' own caches the backend user)
    _default_user: Any

    users = _collection(entities.SqlitedosUserCollection)
    computers = _collection(entities.SqlitedosComputerCollection)
    authinfos = _collection(entities.SqlitedosAuthInfoCollection)
    nodes = _collection(entities.SqlitedosNodeCollection)
    groups = _collection(entities.SqlitedosGroupCollection)
    comments = _collection(entities.SqlitedosCommentCollection)
    logs = _collection(entities.SqlitedosLogCollection)

    #: aiida's: the ORM ``User`` of the profile's default email (sqlitedos' own gives the backend user).
    default_user = AiidaStorageBackend.default_user

    def _init_aiida(self) -> None:
        from aiida.orm.autogroup import AutogroupManager

        self._default_user = None
        self._autogroup = AutogroupManager(self)

    # aiida's contract, not sqlitedos': its front end calls query() for its own backend query builder
    def query(self) -> SqlitedosQueryBuilder:  # type: ignore[override]
        """aiida's backend query builder: query dicts straight to sqlitedos' compiler."""
        return SqlitedosQueryBuilder(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """All-or-nothing block (nested: a savepoint); a failed commit raises aiida's exception.

        Exceptions of the block itself pass unchanged: sqlitedos' own code inside it catches its own classes.
        """
        if not self.in_transaction and self._iterations():
            self._begin_iteration_transaction()
        manager = super().transaction()
        with translated_errors():
            connection = manager.__enter__()
        try:
            yield connection
        except BaseException:
            if not manager.__exit__(*sys.exc_info()):
                entities.reload_all(self)  # forget what the rolled-back block changed, as aiida's session does
                raise
        else:
            with translated_errors():
                manager.__exit__(None, None, None)

    def _iterate(self, rows: Iterator[Any]) -> Iterator[Any]:
        """Yield ``rows`` (a query's), as aiida iterates: writes made while iterating commit together when the
        iteration ends, or roll back if it is abandoned.

        Reading takes no lock. The transaction starts at the first write inside the loop (``transaction``), after
        the rest of the rows have been read: a read snapshot cannot become a write transaction once another process
        has committed (SQLite's ``SQLITE_BUSY_SNAPSHOT``), so draining first is what keeps "database is locked" away.
        """
        if self.in_transaction:
            yield from rows
            return
        iteration = _Iteration(rows)
        active = self._iterations()
        active.append(iteration)
        try:
            yield from iteration
        except BaseException:
            iteration.finish(self, sys.exc_info())
            raise
        else:
            iteration.finish(self, (None, None, None))
        finally:
            active.remove(iteration)

    def _iterations(self) -> list[_Iteration]:
        """The query iterations running in this thread, outermost first."""
        local = self.__dict__.get('_iteration_local')
        if local is None:
            local = self.__dict__.setdefault('_iteration_local', threading.local())
        if not hasattr(local, 'active'):
            local.active = []
        return local.active

    def _begin_iteration_transaction(self) -> None:
        """Before the first write inside running iterations: read their remaining rows, then open the transaction
        that the outermost one commits or rolls back."""
        active = self._iterations()
        for iteration in active:
            iteration.drain()
        owner = active[0]
        owner.transaction = super().transaction()
        with translated_errors():
            owner.transaction.__enter__()

    def bulk_insert(
        self, entity_type: Any, rows: Sequence[Mapping[str, Any]], allow_defaults: bool = False
    ) -> list[int]:
        """Insert rows of an entity type (aiida's ``EntityTypes``) in one transaction; their new ids in order."""
        with translated_errors():
            return super().bulk_insert(_value(entity_type), rows, allow_defaults)

    def bulk_update(self, entity_type: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Update rows of an entity type (aiida's ``EntityTypes``) by id, in one transaction."""
        from aiida.common.exceptions import IntegrityError

        for row in rows:
            if 'id' not in row:
                raise IntegrityError(f"'id' field not given for {_value(entity_type)}: {set(row)}")
        with translated_errors():
            super().bulk_update(_value(entity_type), rows)
            table = self._get_mapper_from_entity(entity_type, True).table
        entities.reload_rows(self, table, [row['id'] for row in rows])

    def _get_mapper_from_entity(self, entity_type: Any, with_pk: bool) -> Any:
        return super()._get_mapper_from_entity(_value(entity_type), with_pk)

    def get_backend_entity(self, model: Any, orm_base: str | None = None) -> Any:
        """The plugin entity of a backend entity or of a raw row (with its ``orm_base`` or table name)."""
        with translated_errors():
            return entities.adopt(super().get_backend_entity(model, orm_base))


class _Iteration:
    """One running query iteration: its rows (read ahead once a write starts) and the transaction it owns."""

    def __init__(self, rows: Iterator[Any]) -> None:
        self.rows = rows
        self.ahead: collections.deque[Any] = collections.deque()
        self.transaction: Any = None

    def __iter__(self) -> _Iteration:
        return self

    def __next__(self) -> Any:
        return self.ahead.popleft() if self.ahead else next(self.rows)

    def drain(self) -> None:
        """Read the remaining rows now (this ends the query's read of the database)."""
        self.ahead.extend(self.rows)

    def finish(self, storage: Any, exc_info: Any) -> None:
        """Commit (``exc_info`` all None) or roll back the transaction that writes inside the loop opened."""
        transaction, self.transaction = self.transaction, None
        if transaction is None:
            return
        if exc_info[0] is None:
            with translated_errors():
                transaction.__exit__(None, None, None)
        else:
            transaction.__exit__(*exc_info)
            entities.reload_all(storage)


class _DosCliModel(AiiDABaseModel):
    """The configuration of a ``sqlitedos.dos`` profile: the keys of ``core.sqlite_dos``."""

    filepath: str = MetadataField(
        title='Directory of the backend',
        description='Filepath of the directory in which to store data for this backend (an existing aiida '
        '`core.sqlite_dos` or sqlitedos storage folder, or a new one).',
        default_factory=lambda: _default_folder(),
    )

    @field_validator('filepath')
    @classmethod
    def filepath_is_absolute(cls, value: str) -> str:
        """The resolved, absolute path."""
        return str(Path(value).expanduser().resolve())


def _default_folder() -> str:
    from aiida.manage.configuration.settings import AiiDAConfigDir

    return str(AiiDAConfigDir.get() / 'repository' / f'sqlitedos_dos_{uuid4().hex}')


@translating_methods
class SqliteDosStorage(_PluginStorage, SqlitedosFolderStorage, AiidaStorageBackend):
    """``sqlitedos.dos``: an aiida storage folder (``database.sqlite`` + ``container/``) run by sqlitedos."""

    CliModel = _DosCliModel

    def __init__(self, profile: Any) -> None:
        with translated_errors():
            SqlitedosFolderStorage.__init__(self, profile)
        self._init_aiida()

    def get_repository(self) -> SqlitedosContainerRepository:
        """The container of the storage as aiida's repository backend (one per storage object)."""
        return self._cached_repository(lambda: SqlitedosContainerRepository(self.filepath_container))

    def _clear(self) -> None:
        """Delete all content (settings stay), give the container a new id; for aiida's test fixtures."""
        AiidaStorageBackend._clear(self)
        with translated_errors():
            SqlitedosFolderStorage._clear(self)
        self._close_repository()

    def maintain(self, full: bool = False, dry_run: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Pack the repository (live); with ``full`` lock the profile (aiida's lock) and also delete unreferenced
        objects and vacuum. Returns sqlitedos' report of what was (or would be) done."""
        from aiida.manage.profile_access import ProfileAccessManager

        context = ProfileAccessManager(self._profile).lock if full else contextlib.nullcontext
        with context(), translated_errors():
            return SqlitedosFolderStorage.maintain(self, full=full, dry_run=dry_run, **kwargs)

    def backup(self, dest: str | os.PathLike[str], keep: int | None = None) -> Path:
        """A backup in aiida's layout (``backup_<time>_<rand>``, ``last-backup``, ``config.json``), without rsync.

        Like aiida: refused while the profile is locked, or when ``dest`` holds anything but backups of this
        profile. Returns the new backup folder.
        """
        from aiida.common.exceptions import LockedProfileError, StorageBackupError
        from aiida.manage.profile_access import ProfileAccessManager

        from sqlitedos.backup import BackupManager, backup_storage

        try:
            ProfileAccessManager(self._profile).request_access()
        except LockedProfileError as exc:
            raise StorageBackupError(f'{self._profile} is locked!') from exc
        with translated_errors():
            manager = BackupManager(Path(dest), keep)
            container_id = self.get_repository().uuid
            if container_id is None:
                raise StorageBackupError(f'{self._profile} has no initialised repository container to back up')
            manager.validate_or_init(self._profile.name, self._profile.dictionary, container_id)
            return manager.backup_auto_folders(lambda path, previous: backup_storage(self, path, previous))

    def _backup(self, dest: str | os.PathLike[str], keep: int | None = None) -> Path:
        return self.backup(dest, keep)


class _TempCliModel(AiiDABaseModel):
    """The configuration of a ``sqlitedos.temp`` profile: where the sandbox repository goes."""

    filepath: str = MetadataField(
        title='Temporary directory',
        description='Temporary directory in which to store the files of this backend.',
        default_factory=tempfile.mkdtemp,
    )


@translating_methods
class SqliteTempStorage(_PluginStorage, SqlitedosTempStorage, AiidaStorageBackend):
    """``sqlitedos.temp``: an in-memory storage, gone when closed (like ``core.sqlite_temp``)."""

    CliModel = _TempCliModel
    cli_exposed = False
    repository_class = SqlitedosSandboxRepository

    @staticmethod
    def create_profile(
        name: str = 'temp',
        default_user_email: str = 'user@email.com',
        options: dict[str, Any] | None = None,
        debug: bool = False,
        filepath: str | Path | None = None,
    ) -> Any:
        """An aiida profile for a new in-memory storage."""
        from aiida.manage.configuration import Profile

        return Profile(
            name,
            {
                'default_user_email': default_user_email,
                'storage': {
                    'backend': ENTRY_POINT_TEMP,
                    'config': {'filepath': str(filepath or tempfile.mkdtemp()), 'debug': debug},
                },
                'process_control': {'backend': None, 'config': {}},
                'options': options or {},
            },
        )

    def __init__(self, profile: Any) -> None:
        with translated_errors():
            SqlitedosTempStorage.__init__(self, profile)
        self._init_aiida()

    def _iterate(self, rows: Iterator[Any]) -> Iterator[Any]:
        """Yield ``rows`` inside a transaction (one connection serves every thread of the in-memory storage, so
        iterations take turns with other threads' transactions)."""
        if self.in_transaction:
            yield from rows
            return
        with self.transaction():
            yield from rows

    def _iterations(self) -> list[Any]:
        return []

    def get_repository(self) -> SqlitedosSandboxRepository:
        """The sandbox repository as aiida's repository backend (erased on close)."""
        return cast(SqlitedosSandboxRepository, super().get_repository())
