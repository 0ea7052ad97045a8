"""``SandboxShaRepositoryBackend``: the temp storage's repository, a flat folder of files named by their sha256.

Uses only ``hashlib``, ``tempfile`` and ``os.replace``: a new object is streamed into a temporary file in the same
folder while it is hashed, flushed with ``fsync``, then renamed to its key, so a reader never sees half an object.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlitedos.repository.abstract import (
    CHUNK_SIZE,
    AbstractRepositoryBackend,
    ObjectNotFoundError,
    ReadOnlyStream,
    VerifyingReader,
    check_key,
)

__all__ = ('PendingFiles', 'SandboxShaRepositoryBackend')

#: An unstored file up to this size waits in memory; a larger one in a sandbox folder (so do all once the memory
#: of one node's files passes ``PENDING_MEMORY_BUDGET``).
PENDING_IN_MEMORY_MAX = 256 * 1024
PENDING_MEMORY_BUDGET = 16 * 1024 * 1024

_PARTIAL_PREFIX = '.partial-'


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(char in '0123456789abcdef' for char in name)


class SandboxShaRepositoryBackend(AbstractRepositoryBackend):
    """Objects as files ``<sandbox>/<sha256>`` in a fresh folder under ``filepath`` (the system temp dir if None).

    The folder is created on first use and deleted by ``erase()`` (the temp storage calls it on close).
    """

    def __init__(self, filepath: str | os.PathLike[str] | None = None, *, durable: bool = True) -> None:
        self._filepath: str | None = None if filepath is None else str(filepath)
        self._sandbox: Path | None = None
        self._lock = threading.Lock()
        #: fsync each new object (False for scratch space whose content is copied elsewhere before it matters).
        self._durable = durable

    def __str__(self) -> str:
        where = self._sandbox if self._sandbox is not None else 'uninitialised'
        return f'SandboxShaRepository: {where}'

    @property
    def uuid(self) -> None:
        return None

    @property
    def key_format(self) -> str:
        return 'sha256'

    def initialise(self, **kwargs: Any) -> None:
        """Create the sandbox folder if it does not exist yet."""
        self.sandbox  # noqa: B018 - creates the folder

    @property
    def is_initialised(self) -> bool:
        return self._sandbox is not None and self._sandbox.is_dir()

    @property
    def sandbox(self) -> Path:
        """The sandbox folder, created on first use."""
        sandbox = self._sandbox
        if sandbox is not None:
            return sandbox
        with self._lock:  # threads writing their first objects at once must share one folder
            if self._sandbox is None:
                if self._filepath is not None:
                    Path(self._filepath).mkdir(parents=True, exist_ok=True)
                self._sandbox = Path(tempfile.mkdtemp(prefix='sqlitedos-sandbox-', dir=self._filepath))
            return self._sandbox

    def erase(self) -> None:
        """Delete the sandbox folder and everything in it."""
        if self._sandbox is not None:
            shutil.rmtree(self._sandbox, ignore_errors=True)
        self._sandbox = None

    def _put_object_from_filelike(self, handle: BinaryIO) -> str:
        folder = self.sandbox
        digest = hashlib.sha256()
        descriptor, partial = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, dir=folder)
        try:
            with os.fdopen(descriptor, 'wb') as target:
                for chunk in iter(lambda: handle.read(CHUNK_SIZE), b''):
                    digest.update(chunk)
                    target.write(chunk)
                target.flush()
                if self._durable:
                    os.fsync(target.fileno())
            key = digest.hexdigest()
            destination = folder / key
            if destination.exists():
                os.unlink(partial)
            else:
                os.replace(partial, destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
        return key

    def link_object(self, source: SandboxShaRepositoryBackend, key: str) -> None:
        """Add the object ``key`` of another sandbox (a hard link where the file system allows, else a copy)."""
        path = source._path(check_key(key))
        if path is None:
            raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
        destination = self.sandbox / key
        if destination.exists():
            return
        try:
            os.link(path, destination)
        except OSError:
            with open(path, 'rb') as handle:
                self._put_object_from_filelike(handle)

    def _path(self, key: str) -> Path | None:
        """The file of ``key`` if it exists (after checking the key is a sha256 so it cannot name another path)."""
        if self._sandbox is None or not _is_key(key):
            return None
        path = self._sandbox / key
        return path if path.is_file() else None

    def has_objects(self, keys: list[str]) -> list[bool]:
        return [isinstance(key, str) and self._path(key) is not None for key in keys]

    def list_objects(self) -> Iterable[str]:
        if self._sandbox is None or not self._sandbox.is_dir():
            return
        with os.scandir(self._sandbox) as entries:
            for entry in entries:
                if _is_key(entry.name):
                    yield entry.name

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(check_key(key))
        if path is None:
            raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
        with open(path, 'rb') as handle:
            yield VerifyingReader(handle, key)  # type: ignore[misc]

    def iter_object_streams(self, keys: Iterable[str]) -> Iterator[tuple[str, BinaryIO]]:
        for key in keys:
            with self.open(key) as handle:
                yield key, handle

    def get_object_hash(self, key: str) -> str:
        """The sha256 of the object's content, which is its key."""
        if self._path(check_key(key)) is None:
            raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
        return key

    def _delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            if path is not None:
                path.unlink(missing_ok=True)

    def get_info(self, detailed: bool = False) -> dict[str, Any]:
        """``{'objects': {'count': N}}``."""
        return {'objects': {'count': sum(1 for _ in self.list_objects())}}

    def maintain(self, dry_run: bool = False, live: bool = True, **kwargs: Any) -> None:
        """Nothing to maintain in a sandbox."""


class PendingFiles:
    """The files of one unstored node until ``store()``: small ones in memory, larger ones in a sandbox folder of
    their own (in the system temp dir, created on first need and deleted by ``erase()`` or with this object)."""

    def __init__(self) -> None:
        self._memory: dict[str, bytes] = {}
        self._memory_size = 0
        self._disk: SandboxShaRepositoryBackend | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def folder(self) -> Path | None:
        """The sandbox folder, or None while every file is in memory."""
        return None if self._disk is None else self._disk.sandbox

    def put(self, handle: BinaryIO) -> str:
        """Keep the content of a binary stream and return its key (its sha256)."""
        head = handle.read(PENDING_IN_MEMORY_MAX + 1)
        if len(head) <= PENDING_IN_MEMORY_MAX and self._memory_size + len(head) <= PENDING_MEMORY_BUDGET:
            key = hashlib.sha256(head).hexdigest()
            if key not in self._memory:
                self._memory[key] = head
                self._memory_size += len(head)
            return key
        return self._sandbox()._put_object_from_filelike(_Prefixed(head, handle))  # type: ignore[arg-type]

    def _sandbox(self) -> SandboxShaRepositoryBackend:
        if self._disk is None:
            disk = SandboxShaRepositoryBackend(durable=False)  # scratch: store() copies it into the repository
            self._finalizer = weakref.finalize(self, shutil.rmtree, disk.sandbox, ignore_errors=True)
            self._disk = disk
        return self._disk

    def has(self, key: str) -> bool:
        return key in self._memory or (self._disk is not None and self._disk.has_object(key))

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        """A context manager yielding the content of ``key``; ``ObjectNotFoundError`` if it is not here."""
        data = self._memory.get(key)
        if data is not None:
            yield io.BytesIO(data)
        elif self._disk is None:
            raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
        else:
            with self._disk.open(key) as handle:
                yield handle

    def copy_into(self, other: PendingFiles) -> None:
        """Give ``other`` every file kept here (disk files hard-linked where possible)."""
        for key, data in self._memory.items():
            if key not in other._memory:
                other._memory[key] = data
                other._memory_size += len(data)
        if self._disk is not None:
            for key in self._disk.list_objects():
                other._sandbox().link_object(self._disk, key)

    def erase(self) -> None:
        """Forget every file and delete the sandbox folder."""
        self._memory.clear()
        self._memory_size = 0
        finalizer, self._finalizer, self._disk = self._finalizer, None, None
        if finalizer is not None:
            finalizer()


class _Prefixed(ReadOnlyStream):
    """A stream of ``head`` followed by what is left of ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if self._position < len(self._head):
            end = len(self._head) if size is None or size < 0 else min(len(self._head), self._position + size)
            data = self._head[self._position : end]
        else:
            data = self._rest.read(-1 if size is None else size)
        self._position += len(data)
        return data
