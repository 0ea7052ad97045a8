"""``SqliteDosStorage``: a storage folder holding ``database.sqlite`` and a disk-objectstore ``container/``."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlitedos import migrate
from sqlitedos.db import (
    Session,
    check_sqlite_version,
    connect,
    decode_json,
    encode_datetime,
    encode_json,
    now,
    translate_errors,
)
from sqlitedos.exceptions import (
    CorruptStorage,
    IncompatibleStorageSchema,
    InvalidOperation,
    ReadOnlyError,
    StorageMigrationError,
    UnreachableStorage,
)
from sqlitedos.profile import Profile, StorageModel
from sqlitedos.repository.disk_objectstore import (
    DiskObjectStoreRepositoryBackend,
    init_container,
    open_container,
    read_container_id,
)
from sqlitedos.storage.base import INSERT_SETTING, StorageBackend, ensure_user
from sqlitedos.tables import TABLE_ORDER, quote_identifier

if TYPE_CHECKING:
    from disk_objectstore import Container

__all__ = ('SqliteDosMigrator', 'SqliteDosStorage')

FILENAME_DATABASE = 'database.sqlite'
FILENAME_CONTAINER = 'container'
REPOSITORY_UUID_KEY = 'repository|uuid'
SELECT_REPOSITORY_UUID = 'SELECT val FROM db_dbsetting WHERE "key" = ?'
UPDATE_REPOSITORY_UUID = 'UPDATE db_dbsetting SET val = ?, time = ? WHERE "key" = ?'


def _is_writable(folder: Path) -> bool:
    """Whether the folder and its database may be written (SQLite needs the folder for its journal files)."""
    database = folder / FILENAME_DATABASE
    return os.access(folder, os.W_OK) and (not database.exists() or os.access(database, os.W_OK))


class SqliteDosMigrator:
    """Checks, initialises and migrates the storage folder of a profile."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.filepath_root = Path(StorageModel(profile.storage_config['filepath']).filepath)
        self.filepath_database = self.filepath_root / FILENAME_DATABASE
        self.filepath_container = self.filepath_root / FILENAME_CONTAINER

    def get_container(self) -> Container:
        """The disk-objectstore container of the storage."""
        return open_container(self.filepath_container)

    def is_initialised(self) -> bool:
        return self.filepath_database.is_file() and (self.filepath_container / 'config.json').is_file()

    def _connect(self) -> sqlite3.Connection:
        if not self.filepath_database.is_file():
            raise UnreachableStorage(
                f'the storage folder {str(self.filepath_root)!r} has no {FILENAME_DATABASE}: it is not an '
                'initialised storage; create it with `SqliteDosStorage.initialise(profile)` or `sqlitedos init`'
            )
        return connect(self.filepath_database, read_only=not _is_writable(self.filepath_root))

    def get_schema_version_profile(self) -> str | None:
        """The revision of the database, or None if the folder holds no database (nothing is created)."""
        if not self.filepath_database.is_file():
            return None
        connection = self._connect()
        try:
            return _read_version(connection, self.filepath_database)
        finally:
            connection.close()

    def validate_storage(self, connection: sqlite3.Connection) -> None:
        """Check version and repository identity, in aiida's order; raise naming what is wrong and what to do."""
        version = _read_version(connection, self.filepath_database)
        head = SqliteDosStorage.version_head()
        if version is None:
            raise IncompatibleStorageSchema(
                f'The database {str(self.filepath_database)!r} has no known version (no alembic_version table): '
                'it is not a sqlite_dos storage database.'
            )
        if version != head:
            known = [name for name, _ in migrate.revisions()]
            if version in known:
                remedy = 'migrate it with `SqliteDosStorage.migrate(profile)` or `sqlitedos migrate PATH`'
            else:
                remedy = 'it was written by a newer aiida-core or sqlitedos: open it with that version'
            raise IncompatibleStorageSchema(
                f'The storage is at schema version {version!r} but this code needs {head!r}: {remedy}.'
            )
        row = connection.execute(SELECT_REPOSITORY_UUID, (REPOSITORY_UUID_KEY,)).fetchone()
        if row is None:
            raise CorruptStorage('The database has no repository UUID set.')
        database_uuid = decode_json(row[0])
        container_uuid = read_container_id(self.filepath_container)
        if database_uuid != container_uuid:
            raise CorruptStorage(
                f"The database has a repository UUID configured to {database_uuid} but the disk-objectstore's is "
                f'{container_uuid}: the database and the container come from different storages; restore the '
                'matching container or database from a backup.'
            )

    def initialise(self, reset: bool = False) -> bool:
        """Create the storage in an empty or missing folder; True if it did.

        A folder that already holds a storage is migrated to the head (and False returned), or with ``reset``
        erased and created anew. Any other non-empty folder is refused, so no data is ever overwritten.
        """
        check_sqlite_version()
        root = self.filepath_root
        if root.exists() and not root.is_dir():
            raise ValueError(f'the storage path {str(root)!r} is a file, not a folder: choose a folder path')
        if root.is_dir() and any(root.iterdir()):
            if not self.is_initialised():
                raise ValueError(
                    f'the folder {str(root)!r} already exists but is not empty and holds no storage: choose an '
                    'empty or new folder'
                )
            if not reset:
                self.migrate()
                return False
            self._erase_contents()
        root.mkdir(parents=True, exist_ok=True)
        container_id = init_container(self.filepath_container)
        self._create_database(container_id)
        return True

    def initialise_database(self) -> None:
        """Create the database at the head schema in a folder whose container exists (aiida's second step).

        As aiida does: the schema straight at head (no migrations replayed), the container's uuid recorded as the
        repository uuid, the version stamped; plus the profile's default user, as ``initialise`` makes it.
        """
        if self.filepath_database.exists():
            raise InvalidOperation(
                f'the database {str(self.filepath_database)!r} already exists: migrate it instead '
                '(`SqliteDosStorage.migrate(profile)`), or initialise with reset=True to erase it'
            )
        self._create_database(read_container_id(self.filepath_container))

    def _erase_contents(self) -> None:
        for name in (FILENAME_DATABASE, FILENAME_DATABASE + '-wal', FILENAME_DATABASE + '-shm'):
            with contextlib.suppress(FileNotFoundError):
                (self.filepath_root / name).unlink()
        import shutil  # only to erase: opening a storage does not import it

        shutil.rmtree(self.filepath_container, ignore_errors=True)

    def _create_database(self, container_id: str) -> None:
        """Build the database under a temporary name and move it into place, so a crash leaves no half database."""
        partial = self.filepath_root / (FILENAME_DATABASE + '.partial')
        partial.unlink(missing_ok=True)
        partial.touch()
        connection = connect(partial)
        try:
            session = Session(connection, file_backed=True)
            with session.transaction() as conn:
                migrate.create_schema(conn)
                conn.execute(
                    INSERT_SETTING,
                    (REPOSITORY_UUID_KEY, encode_json(container_id), 'Repository UUID', encode_datetime(now())),
                )
                if self.profile.default_user_email:
                    ensure_user(conn, self.profile.default_user_email)
        finally:
            connection.close()
        with open(partial, 'rb') as handle:
            os.fsync(handle.fileno())
        os.replace(partial, self.filepath_database)

    def migrate(self) -> None:
        """Bring the database to the head revision, one transaction per revision."""
        if not self.filepath_database.is_file():
            raise StorageMigrationError(
                f'the storage {str(self.filepath_root)!r} is not initialised: run `SqliteDosStorage.initialise` first'
            )
        connection = self._connect()
        try:
            try:
                steps = migrate.plan(connection)
            except IncompatibleStorageSchema as exc:
                raise StorageMigrationError(str(exc)) from exc
            if steps:
                migrate.apply(Session(connection, file_backed=True), steps)
        finally:
            connection.close()


def _read_version(connection: sqlite3.Connection, path: Path) -> str | None:
    try:
        return migrate.read_version(connection)
    except sqlite3.DatabaseError as exc:
        raise CorruptStorage(
            f'{str(path)!r} is not a readable SQLite database ({exc}); restore it from a backup'
        ) from exc


class SqliteDosStorage(StorageBackend):
    """A storage folder: ``database.sqlite`` (aiida's schema) plus a disk-objectstore ``container/``."""

    Model = StorageModel
    migrator = SqliteDosMigrator

    @staticmethod
    def create_profile(
        name: str = 'default',
        filepath: str | os.PathLike[str] | None = None,
        default_user_email: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> Profile:
        """A profile for a storage folder at ``filepath`` (made absolute)."""
        if filepath is None:
            raise ValueError('a folder storage needs a filepath: the folder that holds (or will hold) the storage')
        return Profile(
            name,
            {
                'default_user_email': default_user_email,
                'storage': {'backend': 'core.sqlite_dos', 'config': {'filepath': StorageModel(str(filepath)).filepath}},
                'process_control': {'backend': None, 'config': {}},
                'options': options or {},
            },
        )

    @classmethod
    def version_head(cls) -> str:
        return migrate.version_head()

    @classmethod
    def version_profile(cls, profile: Profile) -> str | None:
        """The schema version of the profile's storage, or None if it is not initialised (nothing is created)."""
        return cls.migrator(profile).get_schema_version_profile()

    @classmethod
    def initialise(cls, profile: Profile, reset: bool = False) -> bool:
        """Create the storage folder (database at head, container, repository uuid, default user); True if created."""
        return cls.migrator(profile).initialise(reset=reset)

    @classmethod
    def migrate(cls, profile: Profile) -> None:
        """Migrate the profile's storage to the head schema version."""
        cls.migrator(profile).migrate()

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self._migrator = self.migrator(profile)
        if not self._migrator.filepath_root.is_dir():
            raise UnreachableStorage(
                f'the storage folder {str(self._migrator.filepath_root)!r} does not exist: create it with '
                '`SqliteDosStorage.initialise(profile)` or `sqlitedos init PATH`'
            )
        self._read_only_folder = not _is_writable(self._migrator.filepath_root)
        self._local = threading.local()
        self._finalizer = weakref.finalize(self, _close_sessions, self._sessions)
        try:
            self._migrator.validate_storage(self._thread_session().connection)
        except BaseException:
            self.close()
            raise

    def __str__(self) -> str:
        state = 'closed' if self.is_closed else 'open'
        return f'SqliteDosStorage[{self._migrator.filepath_root}]: {state},'

    def _thread_session(self) -> Session:
        session = getattr(self._local, 'session', None)
        if session is None:
            connection = self._migrator._connect()
            session = self._register(Session(connection, file_backed=True, read_only=self._read_only_folder))
            self._local.session = session
        return session

    @property
    def filepath_root(self) -> Path:
        return self._migrator.filepath_root

    @property
    def filepath_database(self) -> Path:
        return self._migrator.filepath_database

    @property
    def filepath_container(self) -> Path:
        return self._migrator.filepath_container

    def get_container(self) -> Container:
        """A disk-objectstore ``Container`` on the storage's ``container/`` folder."""
        return self._migrator.get_container()

    def _clear(self) -> None:
        """Delete every entity row (settings and version stay) and recreate the container with a new id. For tests."""
        self.reset_default_user()
        with self.transaction() as connection:
            for table in reversed(TABLE_ORDER):
                connection.execute(f'DELETE FROM {quote_identifier(table)}')
            import shutil

            shutil.rmtree(self.filepath_container, ignore_errors=True)
            container_id = init_container(self.filepath_container)
            connection.execute(
                UPDATE_REPOSITORY_UUID, (encode_json(container_id), encode_datetime(now()), REPOSITORY_UUID_KEY)
            )

    def close(self) -> None:
        super().close()
        self._finalizer.detach()
        self._close_repository()

    def delete(self) -> None:
        """Close the storage and delete the whole folder (database, ``-wal``/``-shm`` files and container)."""
        self.close()
        import shutil

        shutil.rmtree(self.filepath_root, ignore_errors=True)

    # --- repository and maintenance ---------------------------------------------------------------------------

    def get_repository(self) -> DiskObjectStoreRepositoryBackend:
        """The repository backend over the storage's container (one per storage object, opened on first use)."""
        return self._cached_repository(lambda: DiskObjectStoreRepositoryBackend(self.filepath_container))

    def _close_repository(self) -> None:
        repository = self.__dict__.pop('_repository', None)
        if repository is not None:
            repository.close()

    def _repository_info(self, detailed: bool) -> dict[str, Any]:
        """The ``repository`` part of ``get_info``: aiida's container summary (SPEC 4.7)."""
        return self.get_repository().get_info(detailed)

    def get_unreferenced_keyset(self, check_consistency: bool = True) -> set[str]:
        """Keys of the objects in the container that no node's ``repository_metadata`` references.

        With ``check_consistency`` raise ``CorruptStorage`` if a node references a key the container lacks.
        """
        in_container = set(self.get_repository().list_objects())
        referenced = referenced_keys(self.get_session())
        if check_consistency:
            missing = referenced - in_container
            if missing:
                raise CorruptStorage(
                    f'{len(missing)} objects referenced by nodes are missing from the repository container '
                    f'(for example {sorted(missing)[:3]}): restore the container from a backup'
                )
        return in_container - referenced

    def maintain(self, full: bool = False, dry_run: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Pack the repository's loose objects (safe while the storage is in use); return what was (or would be) done.

        ``full`` needs the storage to itself (``LockedProfileError`` if another process has used its repository
        and is still open): it holds the database's write lock while it deletes the objects no node references,
        repacks and vacuums the container, then vacuums the database. ``dry_run`` changes nothing. ``kwargs`` go
        to the repository (``pack_loose``, ``do_repack``, ``clean_storage``, ``do_vacuum``, ``compress``,
        ``incremental_cleanup``).
        """
        if self._read_only_folder:
            raise ReadOnlyError(f'{self} is read-only: maintenance needs a writable storage folder')
        repository = self.get_repository()
        if not full:
            # Unreferenced objects are kept in live mode: another process may have put a file whose node row is not
            # committed yet (files go to the repository before rows).
            return {'repository': repository.maintain(live=True, dry_run=dry_run, **kwargs)}
        if self.in_transaction:
            raise InvalidOperation('full maintenance cannot run inside a transaction: call it outside `transaction()`')
        report: dict[str, Any] = {}
        with repository.exclusive(), self.transaction():
            # Files of nodes that this process has not stored yet are in the container but in no row: keep them.
            unreferenced = self.get_unreferenced_keyset() - repository.keys_held()
            report['unreferenced_objects'] = len(unreferenced)
            if not dry_run and unreferenced:
                repository.delete_objects(sorted(unreferenced))
            report['repository'] = repository.maintain(live=False, dry_run=dry_run, **kwargs)
        if not dry_run:
            with translate_errors():
                self.get_session().execute('VACUUM')
                self.get_session().execute('PRAGMA wal_checkpoint(TRUNCATE)')
        report['database_vacuumed'] = not dry_run
        return report

    def backup(self, dest: str | os.PathLike[str], keep: int | None = None) -> Path:
        """Back the folder up into ``dest`` in aiida's layout (``backup_<time>_<rand>``, ``last-backup``), no rsync.

        :param keep: how many previous backups to keep besides the new one (None: all). Returns the new folder.
        """
        from sqlitedos.backup import backup

        return backup(self, dest, keep)

    def _backup(self, dest: str | os.PathLike[str], keep: int | None = None) -> Path:
        """Write a new backup folder under ``dest`` (which ``backup`` has checked), publish it and rotate."""
        from sqlitedos.backup import BackupManager

        manager = BackupManager(Path(dest), keep)
        return manager.backup_auto_folders(lambda path, previous: self._backup_storage(manager, path, previous))

    def _backup_storage(self, manager: Any, path: Path, prev_backup: Path | None = None) -> None:
        """Copy the database (SQLite online backup) and the container (linking unchanged files to ``prev_backup``)."""
        from sqlitedos.backup import backup_storage

        backup_storage(self, path, prev_backup)


def _close_sessions(sessions: list[Session]) -> None:
    for session in list(sessions):
        session.close()


#: Every file key in every node's tree: a ``{'k': key}`` entry is the only place a text value sits under key 'k'
#: (a file or folder *named* 'k' has an object value).
SELECT_REFERENCED_KEYS = """
SELECT DISTINCT tree.value
FROM db_dbnode AS node, json_tree(node.repository_metadata) AS tree
WHERE node.repository_metadata IS NOT NULL AND tree.key = 'k' AND tree.type = 'text'
"""
#: Rows fetched per step when reading the referenced keys.
KEYS_BATCH_SIZE = 10_000


def referenced_keys(connection: sqlite3.Connection) -> set[str]:
    """The repository keys that some node's ``repository_metadata`` references, parsed in SQL, read in batches."""
    keys: set[str] = set()
    with translate_errors():
        cursor = connection.execute(SELECT_REFERENCED_KEYS)
        try:
            for batch in iter(lambda: cursor.fetchmany(KEYS_BATCH_SIZE), []):
                keys.update(row[0] for row in batch)
        finally:
            cursor.close()
    return keys
