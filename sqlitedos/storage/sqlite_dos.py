"""``SqliteDosStorage``: a storage folder holding ``database.sqlite`` and a disk-objectstore ``container/``."""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
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
    storage_error,
    translate_errors,
)
from sqlitedos.exceptions import (
    CorruptStorage,
    IncompatibleStorageSchema,
    InvalidOperation,
    LockedProfileError,
    ReadOnlyError,
    StorageIOError,
    StorageMigrationError,
    UnreachableStorage,
)
from sqlitedos.layout import CONTAINER_CONFIG, FILENAME_CONTAINER, FILENAME_DATABASE, read_container_id
from sqlitedos.profile import Profile, StorageModel
from sqlitedos.repository.disk_objectstore import DiskObjectStoreRepositoryBackend, init_container, open_container
from sqlitedos.storage.base import INSERT_SETTING, StorageBackend, ensure_user
from sqlitedos.tables import TABLE_ORDER, quote_identifier

if TYPE_CHECKING:
    from disk_objectstore import Container

__all__ = ('SqliteDosMigrator', 'SqliteDosStorage')

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
        return self.filepath_database.is_file() and (self.filepath_container / CONTAINER_CONFIG).is_file()

    def _connect(self, read_only: bool = False) -> sqlite3.Connection:
        """A connection to the database; read-only if asked or if the folder cannot be written."""
        if not self.filepath_database.is_file():
            raise UnreachableStorage(
                f'the storage folder {str(self.filepath_root)!r} has no {FILENAME_DATABASE}: it is not an '
                'initialised storage; create it with `SqliteDosStorage.initialise(profile)` or `sqlitedos init`'
            )
        return connect(self.filepath_database, read_only=read_only or not _is_writable(self.filepath_root))

    def get_schema_version_profile(self) -> str | None:
        """The revision of the database, or None if the folder holds no database (nothing is created)."""
        if not self.filepath_database.is_file():
            return None
        connection = self._connect(read_only=True)
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
        # What a failed attempt must remove: the outermost folder it creates, or else what it puts into the folder.
        created = [path for path in (root, *root.parents) if not path.exists()]
        root.mkdir(parents=True, exist_ok=True)
        try:
            container_id = init_container(self.filepath_container)
            self._create_database(container_id)
        except BaseException as exc:
            self._remove_partial_storage(created[-1] if created else None)
            if isinstance(exc, (sqlite3.Error, StorageIOError)):  # StorageIOError: a full disk, an I/O error
                raise StorageMigrationError(
                    f'could not create the storage in {str(root)!r} ({exc}); nothing was left behind: free some '
                    'space (or fix the cause) and initialise again'
                ) from exc
            raise
        return True

    def _remove_partial_storage(self, created: Path | None) -> None:
        """Undo a failed ``initialise``: delete the folder it created, or the container and partial database."""
        import shutil

        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
            return
        shutil.rmtree(self.filepath_container, ignore_errors=True)
        for name in (FILENAME_DATABASE + '.partial' + suffix for suffix in ('', '-journal', '-wal', '-shm')):
            with contextlib.suppress(FileNotFoundError):
                (self.filepath_root / name).unlink()

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
        translated = storage_error(exc, path)
        if translated is exc:
            translated = CorruptStorage(
                f'{str(path)!r} is not a readable SQLite database ({exc}); restore it from a backup'
            )
        raise translated from exc


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

    def __init__(self, profile: Profile, *, read_only: bool = False) -> None:
        """Open the storage folder of ``profile``; with ``read_only`` (or a folder that cannot be written) it is
        opened without write access, and using it leaves the folder byte- and mtime-identical."""
        super().__init__(profile)
        self._migrator = self.migrator(profile)
        if not self._migrator.filepath_root.is_dir():
            raise UnreachableStorage(
                f'the storage folder {str(self._migrator.filepath_root)!r} does not exist: create it with '
                '`SqliteDosStorage.initialise(profile)` or `sqlitedos init PATH`'
            )
        self._read_only_folder = read_only or not _is_writable(self._migrator.filepath_root)
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

    def _describe(self) -> str:
        return f'the storage folder {str(self.filepath_root)!r}'

    def _thread_session(self) -> Session:
        session = getattr(self._local, 'session', None)
        if session is None:
            connection = self._migrator._connect(read_only=self._read_only_folder)
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
        """A disk-objectstore ``Container`` on the storage's ``container/`` folder (read-only if the storage is)."""
        return open_container(self.filepath_container, read_only=self._read_only_folder)

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
        return self._cached_repository(
            lambda: DiskObjectStoreRepositoryBackend(self.filepath_container, read_only=self._read_only_folder)
        )

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

        ``full`` needs the storage to itself: it proves that no other process or connection, aiida-core's
        included, has the storage open (``LockedProfileError`` otherwise, see ``exclusive_use``) and keeps every
        other one out while it deletes the objects no node references, repacks and vacuums the container, then
        vacuums the database. ``dry_run`` changes nothing. ``kwargs`` go to the repository (``pack_loose``,
        ``do_repack``, ``clean_storage``, ``do_vacuum``, ``compress``, ``incremental_cleanup``,
        ``progress(stage, done, total)``).
        """
        if self._read_only_folder:
            raise ReadOnlyError(f'{self._describe()} is opened read-only: maintenance needs a writable storage folder')
        repository = self.get_repository()
        if not full:
            # Unreferenced objects are kept in live mode: another process may have put a file whose node row is not
            # committed yet (files go to the repository right before their rows).
            return {'repository': repository.maintain(live=True, dry_run=dry_run, **kwargs)}
        report: dict[str, Any] = {}
        with self.exclusive_use('full maintenance'):
            unreferenced = self._unreferenced_not_held()
            report['unreferenced_objects'] = len(unreferenced)
            if not dry_run and unreferenced:
                repository.delete_objects(unreferenced)
            report['repository'] = repository.maintain(live=False, dry_run=dry_run, **kwargs)
            if not dry_run:
                with translate_errors():
                    self.get_session().execute('VACUUM')
        report['database_vacuumed'] = not dry_run
        return report

    def delete_unreferenced_objects(self) -> list[str]:
        """Delete the container objects that no node references, under the proof full maintenance takes; the keys.

        This is ``verify --repair``: exactly as safe as ``maintain(full=True)`` (``LockedProfileError`` while any
        other process or connection has the storage open).
        """
        if self._read_only_folder:
            raise ReadOnlyError(f'{self} is read-only: a repair needs a writable storage folder')
        with self.exclusive_use('the repair'):
            unreferenced = self._unreferenced_not_held()
            if unreferenced:
                self.get_repository().delete_objects(unreferenced)
        return unreferenced

    def _unreferenced_not_held(self) -> list[str]:
        """Unreferenced keys, less those of nodes this process is storing right now (put, row not yet committed)."""
        return sorted(self.get_unreferenced_keyset() - self.get_repository().keys_held())

    @contextlib.contextmanager
    def exclusive_use(self, purpose: str = 'this operation') -> Iterator[None]:
        """Prove that nothing else has the storage open, and keep everything else out until the block ends.

        Raises ``LockedProfileError`` naming what holds it. The proof has three parts, so that it holds against an
        unmodified aiida-core (which takes neither sqlitedos' lock nor aiida's own profile lock here):

        1. the exclusive ``flock`` that every sqlitedos process shares while it uses the container;
        2. SQLite itself: a WAL database cannot leave WAL while another connection has it open (each one holds a
           shared lock on the database file for as long as it is open, https://www.sqlite.org/wal.html#noshm), so
           ``PRAGMA journal_mode = DELETE`` fails then; in rollback mode ``locking_mode = EXCLUSIVE`` plus
           ``BEGIN EXCLUSIVE`` then holds an exclusive lock that stops every other connection from even reading
           until the block ends (https://www.sqlite.org/pragma.html#pragma_locking_mode);
        3. on Linux, no other process has any file of the folder open (``/proc/<pid>/fd``): this catches an idle
           connection that last read a rollback-mode database (aiida's SQLAlchemy pool keeps its connection open).

        At the end the database goes back to WAL (sqlitedos' mode) and the locks are released.
        """
        if self.in_transaction:
            raise InvalidOperation(f'{purpose} cannot run inside a transaction: call it outside `transaction()`')
        with self.get_repository().exclusive():
            connection = self.get_session()
            _take_database_alone(connection, purpose)
            try:
                others = processes_using(self.filepath_root)
                if others:
                    names = ', '.join(f'pid {pid} ({command})' for pid, command in others[:5])
                    raise LockedProfileError(
                        f'{purpose} needs the storage to itself, but other processes have {str(self.filepath_root)!r} '
                        f'open: {names}. Close them (aiida-core processes too: verdi shells, daemon workers, '
                        'notebooks) and try again, or run live maintenance (without --full) instead'
                    )
                yield
            finally:
                _release_database(connection)

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


#: Rows fetched per step when reading the referenced keys.
KEYS_BATCH_SIZE = 10_000


def referenced_keys(connection: sqlite3.Connection) -> set[str]:
    """The repository keys that some node's ``repository_metadata`` references, parsed in SQL, read in batches."""
    from sqlitedos.repository.tree import SELECT_REFERENCED_KEYS  # not on the cold path: tree imports shutil

    keys: set[str] = set()
    with translate_errors():
        cursor = connection.execute(SELECT_REFERENCED_KEYS)
        try:
            for batch in iter(lambda: cursor.fetchmany(KEYS_BATCH_SIZE), []):
                keys.update(row[0] for row in batch)
        finally:
            cursor.close()
    return keys


def _take_database_alone(connection: sqlite3.Connection, purpose: str) -> None:
    """Switch the database out of WAL (refused while another connection has it open) and lock it exclusively."""
    locked = LockedProfileError(
        f'{purpose} needs the storage to itself, but another connection has its database open (another process, '
        'aiida-core included, or another thread of this one): close it and try again, or run live maintenance '
        '(without --full) instead'
    )
    # Connections of storages this process has dropped (aiida-core's after `unload_profile`, for one) are closed
    # only when the garbage collector frees them: collect first, so that only live ones count.
    gc.collect()
    try:
        (mode,) = connection.execute('PRAGMA journal_mode = DELETE').fetchone()
        if mode != 'delete':
            raise locked
        connection.execute('PRAGMA locking_mode = EXCLUSIVE')
        # With locking_mode EXCLUSIVE the lock taken here is kept after COMMIT, until locking_mode is NORMAL again.
        connection.execute('BEGIN EXCLUSIVE')
        connection.execute('COMMIT')
    except sqlite3.OperationalError as exc:
        _release_database(connection)
        if 'locked' in str(exc) or 'busy' in str(exc):
            raise locked from exc
        raise
    except LockedProfileError:
        _release_database(connection)
        raise


def _release_database(connection: sqlite3.Connection) -> None:
    """Back to normal locking (released at the next access) and to WAL, sqlitedos' journal mode."""
    with contextlib.suppress(sqlite3.Error):
        if connection.in_transaction:
            connection.execute('ROLLBACK')
        connection.execute('PRAGMA locking_mode = NORMAL')
        connection.execute('SELECT 1 FROM sqlite_master LIMIT 1').fetchall()
        (mode,) = connection.execute('PRAGMA journal_mode = WAL').fetchone()
        if mode == 'wal':
            connection.execute('PRAGMA synchronous = NORMAL')


#: Where Linux lists each process's open files (absent elsewhere: then only the SQLite and flock proofs hold).
PROC = Path('/proc')


def processes_using(folder: Path) -> list[tuple[int, str]]:
    """``(pid, command)`` of the other processes with a file under ``folder`` open, from ``/proc/<pid>/fd``.

    Processes whose descriptors may not be read (another user's, unless run as root) are skipped: the SQLite proof
    of ``exclusive_use`` still covers their open database connections.
    """
    if not (PROC / 'self' / 'fd').is_dir():
        return []
    root = str(Path(folder).resolve())
    me = os.getpid()
    found = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            descriptors = list(os.scandir(Path(entry.path) / 'fd'))
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor.path)
            except OSError:
                continue
            if target == root or target.startswith(root + os.sep):
                found.append((int(entry.name), _command_of(Path(entry.path))))
                break
    return found


def _command_of(process: Path) -> str:
    try:
        words = (process / 'cmdline').read_bytes().split(b'\0')
    except OSError:
        return '?'
    return ' '.join(' '.join(word.decode(errors='replace').split()) for word in words if word)[:80] or '?'
