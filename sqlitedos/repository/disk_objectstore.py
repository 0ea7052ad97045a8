"""The disk-objectstore adapter: the only module that imports ``disk_objectstore``, and only inside functions.

Importing ``disk_objectstore`` imports SQLAlchemy (about 0.2 s), so nothing here runs at ``import sqlitedos``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from sqlitedos.db import connect
from sqlitedos.exceptions import (
    AiidaException,
    CorruptStorage,
    LockedProfileError,
)
from sqlitedos.layout import CONTAINER_CONFIG, CONTAINER_FOLDERS, LOOSE, PACKS, PACKS_INDEX, read_container_id
from sqlitedos.repository.abstract import (
    AbstractRepositoryBackend,
    ObjectNotFoundError,
    ReadOnlyStream,
    VerifyingReader,
    check_key,
    sha256_of_stream,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no cross-process maintenance lock
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import logging

    from disk_objectstore import Container

__all__ = (
    'CONTAINER_DEFAULTS',
    'DiskObjectStoreRepositoryBackend',
    'init_container',
    'open_container',
    'read_container_id',
    'repack_leftovers',
)


def _logger() -> logging.Logger:
    import logging  # on first message: opening a storage imports no logging

    return logging.getLogger('sqlitedos.repository')


BYTES_TO_MB = 1 / 1024**2

#: The container settings aiida uses for a new storage (``psql_dos/backend.py::CONTAINER_DEFAULTS``).
CONTAINER_DEFAULTS: dict[str, Any] = {
    'pack_size_target': 4 * 1024 * 1024 * 1024,
    'loose_prefix_len': 2,
    'hash_type': 'sha256',
    'compression_algorithm': 'zlib+1',
}


def open_container(folder: str | Path, read_only: bool = False) -> Container:
    """A ``Container`` object for ``folder`` (not checked; use ``read_container_id`` for that).

    With ``read_only`` the container reads its pack index through ``db.connect(read_only=True)``, which works on
    read-only media and leaves the folder as it was; any write through it fails with "attempt to write a readonly
    database".
    """
    from disk_objectstore import Container

    make_pack_writes_durable()
    container = Container(str(folder))
    if read_only:
        container._operation_session = _read_only_index_session(Path(folder) / PACKS_INDEX)
    return container


def _read_only_index_session(index: Path) -> Any:
    """A SQLAlchemy session for disk-objectstore on one read-only ``connect()`` connection to ``index``.

    disk-objectstore's own session opens the index read-write and sets ``journal_mode=wal`` on every connection:
    on read-only media that fails, and elsewhere it leaves ``packs.idx-wal``/``-shm`` behind a reader.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import StaticPool

    if index.exists():
        engine = create_engine('sqlite://', creator=lambda: connect(index, read_only=True), poolclass=StaticPool)
    else:  # disk-objectstore makes the index on the first write: until then nothing is packed
        from disk_objectstore.database import Base

        engine = create_engine('sqlite://', creator=lambda: connect(':memory:'), poolclass=StaticPool)
        Base.metadata.create_all(engine)

    @event.listens_for(engine, 'begin')
    def begin(conn: Any) -> None:  # one consistent snapshot per session transaction, as disk-objectstore has
        conn.exec_driver_sql('BEGIN')

    return Session(bind=engine, autoflush=False, future=True)


def flush_to_disk(handle: Any, path: Path, use_fullsync: bool = False) -> None:
    """Flush ``handle`` and fsync its file and then its folder (so a new file's name survives a power cut too).

    ``F_FULLFSYNC`` where the platform has it (macOS: plain fsync does not reach the platters there), else
    ``fsync``. Every descriptor opened here is closed. https://man7.org/linux/man-pages/man2/fsync.2.html
    """
    handle.flush()
    full = getattr(fcntl, 'F_FULLFSYNC', None) if fcntl is not None else None

    def sync(descriptor: int) -> None:
        if full is not None:
            fcntl.fcntl(descriptor, full)
        else:
            os.fsync(descriptor)

    sync(handle.fileno())
    if os.name == 'posix':
        folder = os.open(Path(path).parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            sync(folder)
        finally:
            os.close(folder)


#: The test of disk-objectstore 1.5.0's ``safe_flush_to_disk`` that is always true: on Linux it then calls
#: ``fcntl(fd, 0)`` (``F_DUPFD``), which syncs nothing and leaks a descriptor, for every pack written.
_BROKEN_FULLSYNC_TEST = "hasattr(fcntl, 'F_FULLFSYNC') is not None"


def fullsync_is_broken() -> bool:
    """Whether the installed disk-objectstore's pack flush is the broken one (see ``_BROKEN_FULLSYNC_TEST``)."""
    import inspect

    from disk_objectstore import utils

    if fcntl is not None and hasattr(fcntl, 'F_FULLFSYNC'):
        return False  # macOS: the broken test happens to pick the right call
    try:
        source = inspect.getsource(utils.safe_flush_to_disk)
    except (OSError, TypeError):  # no source shipped: judge by the version that is known to be broken
        import disk_objectstore

        return disk_objectstore.__version__ == '1.5.0'
    return _BROKEN_FULLSYNC_TEST in source


def make_pack_writes_durable() -> None:
    """Make disk-objectstore fsync every pack it writes (before the pack index commit naming it), once per process.

    Where its own flush is broken (``fullsync_is_broken``), the name its container module calls is replaced by
    ``flush_to_disk``; a fixed disk-objectstore is left alone.
    """
    global _durable_checked
    if _durable_checked:
        return
    with _durable_lock:
        if not _durable_checked:
            from disk_objectstore import container as container_module

            if fullsync_is_broken():
                container_module.safe_flush_to_disk = flush_to_disk  # type: ignore[assignment]
            _durable_checked = True


_durable_checked = False
_durable_lock = threading.Lock()


def init_container(folder: str | Path) -> str:
    """Create a new, empty container with aiida's defaults and return its ``container_id``."""
    container = open_container(folder)
    container.init_container(clear=True, **CONTAINER_DEFAULTS)
    try:
        return container.container_id
    finally:
        container.close()


#: Where disk-objectstore's pack index says a packed object is (``packs.idx``, table ``db_object``).
SELECT_PACKED = 'SELECT pack_id, "offset", length, compressed FROM db_object WHERE hashkey = ?'

#: The pack disk-objectstore rewrites a pack into while repacking (``Container._REPACK_PACK_ID``).
REPACK_PACK_ID = -1
COUNT_IN_PACK = 'SELECT COUNT(*) FROM db_object WHERE pack_id = ?'
SELECT_PACK_IDS = 'SELECT DISTINCT pack_id FROM db_object'
MOVE_TO_PACK = 'UPDATE db_object SET pack_id = ? WHERE pack_id = ?'
#: Where the last indexed object of a pack ends: bytes past it belong to no object.
SELECT_PACK_END = 'SELECT COALESCE(MAX("offset" + length), 0) FROM db_object WHERE pack_id = ?'


def repack_leftovers(folder: str | Path) -> list[str]:
    """What an interrupted repack left in the container at ``folder`` (read only): stale files, index rows.

    ``packs/-1`` and ``packs/-1.lock`` are the pack disk-objectstore repacks into and its lock; index rows naming
    pack -1 mean the repack was cut after it moved the objects there. Full maintenance finishes or undoes it.
    """
    packs = Path(folder) / PACKS
    found = [f'packs/{name}' for name in (str(REPACK_PACK_ID), f'{REPACK_PACK_ID}.lock') if (packs / name).exists()]
    rows = _count_in_repack_pack(Path(folder) / PACKS_INDEX)
    if rows:
        found.append(f'{rows} pack index row(s) name the repack pack {REPACK_PACK_ID}')
    return found


def _count_in_repack_pack(index: Path) -> int:
    if not index.is_file():
        return 0
    try:
        connection = connect(index, read_only=True)  # leaves no -wal/-shm behind, works on read-only media
    except AiidaException:
        return 0  # an unreadable index is reported by its own check
    try:
        return connection.execute(COUNT_IN_PACK, (REPACK_PACK_ID,)).fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        connection.close()


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def finish_interrupted_repack(folder: Path) -> list[str]:
    """Bring a container whose repack was cut off back to a sound state; what was done. Needs the container alone.

    disk-objectstore's ``repack_pack(P)`` writes pack -1 (fsynced), commits the index rows to -1, removes P, links
    -1 to P, commits the rows back to P and unlinks -1. Rows naming -1 mean pack -1 is complete: link it under a
    pack id (the one it is already linked as, else the lowest free one), move the rows there, then drop -1. With
    no rows naming -1, pack -1 is an unused partial copy (or a second name of a pack) and is removed. An old P left
    without rows is dead space that the next repack deletes.
    """
    packs = folder / PACKS
    repack = packs / str(REPACK_PACK_ID)
    done: list[str] = []
    index_path = folder / PACKS_INDEX
    if index_path.is_file():
        index = connect(index_path)
        try:
            rows = index.execute(COUNT_IN_PACK, (REPACK_PACK_ID,)).fetchone()[0]
            if rows:
                if not repack.is_file():
                    raise CorruptStorage(
                        f'the pack index of {str(folder)!r} names the repack pack {REPACK_PACK_ID} for {rows} '
                        'objects but that pack file is gone: restore the container from a backup'
                    )
                target = _repack_target(packs, repack, index)
                if not (packs / str(target)).exists():
                    os.link(repack, packs / str(target))
                    _fsync_folder(packs)
                # The move must be on disk before pack -1 is unlinked below (NORMAL syncs WAL commits only at
                # checkpoints): https://www.sqlite.org/pragma.html#pragma_synchronous
                index.execute('PRAGMA synchronous = FULL')
                index.execute('BEGIN IMMEDIATE')
                index.execute(MOVE_TO_PACK, (target, REPACK_PACK_ID))
                index.execute('COMMIT')
                done.append(f'moved {rows} objects of an interrupted repack from pack {REPACK_PACK_ID} to {target}')
        finally:
            index.close()
    for stale in (repack, packs / f'{REPACK_PACK_ID}.lock'):
        if stale.exists():
            stale.unlink()
            done.append(f'removed packs/{stale.name}')
    if done:
        _fsync_folder(packs)
        _logger().warning('Interrupted repack of %s: %s', folder, '; '.join(done))
    return done


def _repack_target(packs: Path, repack: Path, index: sqlite3.Connection) -> int:
    """The pack id for the objects of a complete pack -1: the id it is already linked as, else the lowest free."""
    identity = repack.stat().st_ino
    numbered = {int(path.name): path for path in packs.iterdir() if path.name.isdigit()}
    for pack_id, path in sorted(numbered.items()):
        if path.stat().st_ino == identity:
            return pack_id
    used = set(numbered) | {row[0] for row in index.execute(SELECT_PACK_IDS)}
    return next(pack_id for pack_id in range(len(used) + 1) if pack_id not in used)


def _pack_sizes(packs: Path) -> dict[int, int]:
    return {int(path.name): path.stat().st_size for path in packs.iterdir() if path.name.isdigit()}


def drop_dead_tails(folder: Path, before: dict[int, int]) -> None:
    """After a failed packing, cut each pack it grew back to the end of its last indexed object (no new dead bytes).

    A pack another process is appending to right now has its ``<id>.lock`` file: it is left alone. A pack file the
    failed packing created and that indexes nothing is removed.
    """
    packs = folder / PACKS
    if not (folder / PACKS_INDEX).is_file():
        return
    index = connect(folder / PACKS_INDEX)
    try:
        for pack_id, size in _pack_sizes(packs).items():
            if size <= before.get(pack_id, -1) or (packs / f'{pack_id}.lock').exists():
                continue
            end = index.execute(SELECT_PACK_END, (pack_id,)).fetchone()[0]
            path = packs / str(pack_id)
            if end == 0 and pack_id not in before:
                path.unlink()
            elif size > end:
                os.truncate(path, end)
            _logger().warning('Cut pack %s back from %d to %d bytes after a failed packing', path, size, end)
    finally:
        index.close()


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from a write, or SQLite's 'database or disk is full' (through sqlite3 or SQLAlchemy)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return 'disk is full' in str(exc) or 'No space left' in str(exc)


class _PackSlice(ReadOnlyStream):
    """A read-only stream over ``length`` bytes at ``offset`` of an open pack file (closed with the slice)."""

    def __init__(self, handle: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self._handle = handle
        self._start = offset
        self._length = length
        self._position = 0
        handle.seek(offset)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise ValueError(f'negative seek position {base + offset}')
        self._position = min(base + offset, self._length)
        self._handle.seek(self._start + self._position)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._position
        size = left if size is None or size < 0 else min(size, left)
        data = self._handle.read(size)
        self._position += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


#: How long opening a container waits for another process's full maintenance to finish (seconds).
SHARED_LOCK_TIMEOUT = 60.0


class _ContainerLock:
    """This process's ``flock`` on a container's ``config.json``: shared while the process uses the container,
    exclusive during full maintenance, so that full maintenance never runs while another process may hold files
    it has put but not yet recorded in a node row (aiida's profile lock plays this part).

    ``flock`` locks belong to an open file, so one per process and container is shared by every storage object
    (a second open file would conflict with the first). https://man7.org/linux/man-pages/man2/flock.2.html
    """

    _registry: dict[tuple[int, int], _ContainerLock] = {}
    _guard = threading.Lock()

    def __init__(self, identity: tuple[int, int], descriptor: int) -> None:
        self.identity = identity
        self.descriptor = descriptor
        self.users = 0

    @classmethod
    def acquire(cls, path: Path) -> _ContainerLock | None:
        """Take (or share) the process's shared lock on ``path``; None where ``flock`` does not exist."""
        if fcntl is None:
            return None
        with cls._guard:
            descriptor = os.open(path, os.O_RDONLY)
            status = os.fstat(descriptor)
            identity = (status.st_dev, status.st_ino)
            lock = cls._registry.get(identity)
            if lock is not None:
                os.close(descriptor)
            else:
                try:
                    _flock_waiting(descriptor, fcntl.LOCK_SH, SHARED_LOCK_TIMEOUT, path)
                except BaseException:
                    os.close(descriptor)
                    raise
                lock = cls._registry[identity] = cls(identity, descriptor)
            lock.users += 1
            return lock

    def release(self) -> None:
        with self._guard:
            self.users -= 1
            if self.users == 0:
                del self._registry[self.identity]
                os.close(self.descriptor)  # closing the file releases the lock

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively; ``LockedProfileError`` at once if another process uses the container."""
        assert fcntl is not None
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fcntl.flock(self.descriptor, fcntl.LOCK_SH)  # a failed conversion may have dropped the shared lock
            raise LockedProfileError(
                'another sqlitedos process is using this storage, and full maintenance (or a repair) needs the '
                'storage to itself: close the other processes (or wait for them to finish), or run live maintenance '
                '(`full=False`) instead'
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(self.descriptor, fcntl.LOCK_SH)


#: How long maintenance waits for another process's packing to finish (seconds).
PACK_LOCK_TIMEOUT = 600.0


@contextlib.contextmanager
def _packing(packs: Path) -> Iterator[None]:
    """Pack alone: hold an exclusive ``flock`` on the ``packs/`` folder, and clear pack locks that dead packers left.

    disk-objectstore marks a pack it appends to with a ``packs/<id>.lock`` file (``open(..., 'x')``) that a killed
    process never removes, so every later packing would fail with ``FileExistsError``; and two live packers would
    collide on it. Every sqlitedos packer holds this flock, so a lock file seen while holding it is stale (a pack's
    unindexed tail from an interrupted append is only unused space: the index records each object's offset).
    """
    if fcntl is None or not packs.is_dir():  # pragma: no cover - no flock on this platform
        yield
        return
    descriptor = os.open(packs, os.O_RDONLY)
    try:
        _flock_waiting(descriptor, fcntl.LOCK_EX, PACK_LOCK_TIMEOUT, packs / '.')
        for stale in packs.glob('*.lock'):
            if stale.stem.isdigit():
                _logger().warning('Removing the pack lock %s left by an interrupted packing', stale)
                stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the flock


def _flock_waiting(descriptor: int, operation: int, timeout: float, path: Path) -> None:
    """``flock`` without blocking forever: retry until ``timeout``, then raise ``LockedProfileError``."""
    assert fcntl is not None
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            if time.monotonic() > deadline:
                raise LockedProfileError(
                    f'the repository container {str(path.parent)!r} has been under full maintenance by another '
                    f'process for more than {timeout:.0f} s: try again when it has finished'
                ) from exc
            time.sleep(0.05)


class DiskObjectStoreRepositoryBackend(AbstractRepositoryBackend):
    """The repository of a folder storage: a disk-objectstore container, opened on first use.

    Objects are streamed into the container's sandbox, hashed and moved into ``loose/``; ``maintain`` packs them.
    Call ``close()`` to release the container's pack index (the storage does so on close).
    """

    def __init__(self, folder: str | Path, read_only: bool = False) -> None:
        self._folder = Path(folder)
        self._read_only = read_only
        self._config: dict[str, Any] | None = None
        # A Container holds a SQLAlchemy session on its pack index, which must not be shared between threads:
        # each thread gets its own, as each thread gets its own database connection from the storage.
        self._local = threading.local()
        self._open: list[Container] = []
        self._open_lock = threading.Lock()
        self._lock: _ContainerLock | None = None
        self._indexes: list[sqlite3.Connection] = []

    def __str__(self) -> str:
        return f'DiskObjectStoreRepository: {self._folder}'

    def packing(self) -> contextlib.AbstractContextManager[None]:
        """Write straight into packs alone (archive import): the pack lock of ``maintain``, see ``_packing``."""
        return _packing(self._folder / PACKS)

    @property
    def container(self) -> Container:
        """The calling thread's ``Container`` (imports disk-objectstore the first time)."""
        # A container erased and created anew under the same folder (``_clear``, ``initialise(reset=True)``) gets a
        # new config.json: reopen then, rather than keep a session on the old pack index.
        try:
            identity = (self._folder / CONTAINER_CONFIG).stat().st_ino
        except FileNotFoundError:
            identity = None
        container = getattr(self._local, 'container', None)
        if container is not None and identity != self._local.identity:
            self._close_one(container)
            container = None
            index = getattr(self._local, 'index', None)
            if index is not None:
                with self._open_lock:
                    self._indexes.remove(index)
                index.close()
                self._local.index = None
        if container is None:
            self._follow_lock(identity)
            container = open_container(self._folder, read_only=self._read_only)
            with self._open_lock:
                self._open.append(container)
            self._local.container, self._local.identity = container, identity
            self._config = None
        return container

    def _close_one(self, container: Container) -> None:
        with self._open_lock:
            if container in self._open:
                self._open.remove(container)
        container.close()
        if getattr(self._local, 'container', None) is container:
            self._local.container = None

    def _follow_lock(self, identity: int | None) -> None:
        """Hold the shared lock of the container now in the folder (none while the folder has no container)."""
        with self._open_lock:
            lock = self._lock
            if lock is not None and lock.identity[1] == identity:
                return
            self._lock = None
            if lock is not None:
                lock.release()
            if identity is not None:
                self._lock = _ContainerLock.acquire(self._folder / CONTAINER_CONFIG)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Use the container alone: ``LockedProfileError`` if another process is using it (see ``_ContainerLock``)."""
        self.container  # noqa: B018 - opens the container and takes the shared lock
        lock = self._lock
        if lock is None:  # no flock on this platform
            yield
            return
        with lock.exclusive():
            yield

    def close(self) -> None:
        """Release the containers' open files (pack index sessions, lock); the backend can be used again later."""
        with self._open_lock:
            containers, self._open = self._open, []
            indexes, self._indexes = self._indexes, []
            lock, self._lock = self._lock, None
        for container in containers:
            container.close()
        for index in indexes:
            index.close()
        if lock is not None:
            lock.release()
        self._local = threading.local()

    def _read_config(self) -> dict[str, Any]:
        if self._config is None:
            read_container_id(self._folder)
            self._config = json.loads((self._folder / CONTAINER_CONFIG).read_text('utf-8'))
        return self._config

    @property
    def uuid(self) -> str | None:
        """The ``container_id`` of the container, or None if it is not initialised."""
        return read_container_id(self._folder) if self.is_initialised else None

    @property
    def key_format(self) -> str | None:
        """The container's hash type (``'sha256'`` for every container aiida or sqlitedos creates)."""
        return self._read_config()['hash_type'] if self.is_initialised else None

    def initialise(self, **kwargs: Any) -> None:
        """Create the container with aiida's defaults (overridden by ``kwargs``) unless it exists."""
        if not self.is_initialised:
            self.container.init_container(**{**CONTAINER_DEFAULTS, **kwargs})
            self._config = None

    @property
    def is_initialised(self) -> bool:
        return (self._folder / CONTAINER_CONFIG).is_file() and all(
            (self._folder / n).is_dir() for n in CONTAINER_FOLDERS
        )

    def erase(self) -> None:
        """Delete the container folder and everything in it (a missing folder is fine)."""
        self.close()
        import shutil

        shutil.rmtree(self._folder, ignore_errors=True)
        self._config = None

    def _put_object_from_filelike(self, handle: BinaryIO) -> str:
        # add_streamed_object copies the stream in chunks into the sandbox, hashing as it goes, then renames.
        key = self.container.add_streamed_object(handle)
        self._sync_loose_folder(key)
        return key

    def _sync_loose_folder(self, key: str) -> None:
        """Make the rename of a new loose object durable before any row can name it.

        disk-objectstore 1.5.0 fsyncs the object and ``loose/`` but not ``loose/<prefix>/``, the folder the rename
        happened in: POSIX makes a new name durable only with an fsync of its folder, so a power cut could keep the
        row (synced at a later checkpoint) and lose the object (found by ``tests/test_crash_consistency.py``).
        """
        container = self.container
        folder = Path(container.get_folder()) / LOOSE / key[: container.loose_prefix_len]
        try:
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # the object was packed already: the pack index holds it
            return
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def has_objects(self, keys: list[str]) -> list[bool]:
        return self.container.has_objects(list(keys))

    def list_objects(self) -> Iterable[str]:
        return self.container.list_all_objects()

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        from disk_objectstore.exceptions import NotExistent as ContainerNotExistent

        check_key(key)
        with contextlib.ExitStack() as stack:
            stream = self._open_direct(key)
            if stream is not None:
                stack.callback(stream.close)
            else:
                try:
                    # disk-objectstore's readers (loose file, pack slice, decompressor) are binary streams
                    stream = cast(BinaryIO, stack.enter_context(self.container.get_object_stream(key)))
                except ContainerNotExistent as exc:
                    raise ObjectNotFoundError(f'object with key `{key}` does not exist.') from exc
            yield VerifyingReader(stream, key)  # type: ignore[misc]

    def _open_direct(self, key: str) -> BinaryIO | None:
        """The object's loose file, or its slice of an uncompressed pack; None to leave it to disk-objectstore.

        Container reads go through SQLAlchemy (about 0.4 ms an object); this reads the pack index with ``sqlite3``.
        The content is still checked against the key (``VerifyingReader``), so a wrong slice cannot go unnoticed.
        """
        self.container  # noqa: B018 - follows a re-created container and holds the shared lock
        prefix = self._read_config()['loose_prefix_len']
        loose = self._folder / LOOSE / key[:prefix] / key[prefix:] if prefix else self._folder / LOOSE / key
        with contextlib.suppress(FileNotFoundError):
            return open(loose, 'rb')
        # Loose files are deleted only after their pack's index rows are committed, so a missing loose file is
        # either in the index now or absent (disk-objectstore's ``clean_storage`` and ``pack_all_loose``).
        index = self._pack_index()
        if index is None:
            return None
        row = index.execute(SELECT_PACKED, (key,)).fetchone()
        if row is None or row[3]:
            return None  # absent (disk-objectstore says so properly) or compressed (it decompresses)
        pack_id, offset, length, _ = row
        handle = open(self._folder / PACKS / str(pack_id), 'rb')
        return _PackSlice(handle, offset, length)  # type: ignore[return-value]

    def _pack_index(self) -> sqlite3.Connection | None:
        """The calling thread's read-only connection to ``packs.idx`` (None if it cannot be opened)."""
        connection = getattr(self._local, 'index', None)
        if connection is None:
            try:
                connection = connect(self._folder / PACKS_INDEX, read_only=True)
            except (AiidaException, sqlite3.Error):
                return None
            with self._open_lock:
                self._indexes.append(connection)
            self._local.index = connection
        return connection

    def iter_object_streams(self, keys: Iterable[str]) -> Iterator[tuple[str, BinaryIO]]:
        """Yield ``(key, stream)`` in the container's order (pack by pack, by offset), not in the order given."""
        with self.container.get_objects_stream_and_meta(list(keys), skip_if_missing=False) as triplets:
            for key, stream, _ in triplets:
                if stream is None:
                    raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
                yield key, VerifyingReader(cast(BinaryIO, stream), key)  # type: ignore[misc]

    def get_object_hash(self, key: str) -> str:
        """The sha256 of the object's content: its key in a sha256 container, else computed from the content."""
        if self.key_format == 'sha256':
            if not self.has_object(check_key(key)):
                raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
            return key
        with self.container.get_object_stream(key) as stream:
            return sha256_of_stream(cast(BinaryIO, stream))

    def _delete_objects(self, keys: list[str]) -> None:
        self.container.delete_objects(keys)

    def get_info(self, detailed: bool = False) -> dict[str, Any]:
        """aiida's repository summary: hash and compression algorithms, object counts, and with ``detailed`` sizes."""
        container = self.container
        info: dict[str, Any] = {
            'SHA-hash algorithm': container.hash_type,
            'Compression algorithm': container.compression_algorithm,
            'Objects': dataclasses.asdict(container.count_objects()),
        }
        if detailed:
            sizes = dataclasses.asdict(container.get_total_size())
            info['Size (MB)'] = {name: float(f'{value * BYTES_TO_MB:.2f}') for name, value in sizes.items()}
        return info

    def maintain(  # type: ignore[override]  # its options by name: an unknown one is a TypeError, not ignored
        self,
        dry_run: bool = False,
        live: bool = True,
        pack_loose: bool | None = None,
        do_repack: bool | None = None,
        clean_storage: bool | None = None,
        do_vacuum: bool | None = None,
        compress: bool = False,
        incremental_cleanup: bool = True,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Pack loose objects and (unless ``live``) repack and vacuum; return what was (or would be) done.

        ``live=True`` does only what is safe while other processes use the container: pack loose objects and drop
        the loose copies of packed ones. Asking for a repack or vacuum in live mode raises ``ValueError``.
        """
        from disk_objectstore import CompressMode
        from disk_objectstore.exceptions import InconsistentContent

        if live and (do_repack or clean_storage or do_vacuum):
            overrides = {'do_repack': do_repack, 'clean_storage': clean_storage, 'do_vacuum': do_vacuum}
            keys = ', '.join(key for key, value in overrides.items() if value is True)
            raise ValueError(f'The following overrides were enabled but cannot be if `live=True`: {keys}')
        pack_loose = True if pack_loose is None else pack_loose
        if live:
            do_repack, clean_storage, do_vacuum = False, True if clean_storage is None else clean_storage, False
        else:
            do_repack = True if do_repack is None else do_repack
            clean_storage = True if clean_storage is None else clean_storage
            do_vacuum = True if do_vacuum is None else do_vacuum
        packs = self._folder / PACKS
        leftovers = [] if live else repack_leftovers(self._folder)
        if leftovers and not dry_run:
            with _packing(packs):
                finish_interrupted_repack(self._folder)
            # disk-objectstore's session may hold a read snapshot from before the fix (it would then see pack 0
            # empty and delete it): start this thread's container afresh.
            self._close_one(self.container)
        container = self.container
        counts = container.count_objects()
        report: dict[str, Any] = {
            'dry_run': dry_run,
            'pack_loose': pack_loose,
            'loose_objects': counts.loose,
            'do_repack': do_repack,
            'packed_objects': counts.packed,
            'clean_storage': clean_storage,
            'do_vacuum': do_vacuum,
        }
        _logger().info('Repository maintenance (%s): %r', 'dry run' if dry_run else 'live' if live else 'full', report)
        if not live:
            report['repack_leftovers'] = leftovers
        if dry_run:
            return report
        try:
            with _packing(packs):
                if pack_loose:
                    before = _pack_sizes(packs)
                    try:
                        container.pack_all_loose(
                            compress=CompressMode.AUTO if compress else CompressMode.NO,
                            clean_loose_per_pack=incremental_cleanup,
                            callback=_size_callback(progress),
                        )
                    except BaseException:
                        drop_dead_tails(self._folder, before)
                        raise
                if do_repack:
                    container.repack(callback=_size_callback(progress))
                if clean_storage:
                    container.clean_storage(vacuum=do_vacuum)
        except InconsistentContent as exc:
            raise CorruptStorage(
                f'the repository container {str(self._folder)!r} holds a corrupt object ({exc}); find it with '
                '`sqlitedos verify` and restore it from a backup, or delete it and store the file again'
            ) from exc
        except AssertionError as exc:  # disk-objectstore's checks of its own state
            raise CorruptStorage(
                f'disk-objectstore stopped on an inconsistent container {str(self._folder)!r}: {exc}; run '
                '`sqlitedos verify` to see what is wrong'
            ) from exc
        except Exception as exc:
            if not _is_disk_full(exc):
                raise
            raise OSError(
                errno.ENOSPC,
                f'the disk holding {str(self._folder)!r} is full, so maintenance could not write ({exc}); nothing '
                'was lost and no dead bytes were left. Free some space, or run `sqlitedos maintain --full --no-pack`'
                ' (or `maintain(full=True, pack_loose=False, do_repack=False)`): it deletes unreferenced objects and '
                'the loose copies of packed objects without writing any pack',
            ) from exc
        return report


def _size_callback(progress: Callable[[str, int, int], None] | None) -> Callable[[str, Any], None] | None:
    """disk-objectstore's ``callback(action, value)`` (bytes done per step) as ``progress(stage, done, total)``."""
    if progress is None:
        return None
    state: dict[str, Any] = {'stage': '', 'done': 0, 'total': 0}

    def callback(action: str, value: Any) -> None:
        if action == 'init':
            state.update(stage=value['description'], done=0, total=value['total'])
        elif action == 'update':
            state['done'] += value
        else:
            return
        progress(state['stage'], state['done'], state['total'])

    return callback
