"""``SandboxShaRepositoryBackend``: the temp storage's repository, a flat folder of files named by their sha256.

Uses only ``hashlib``, ``tempfile`` and ``os.replace``: a new object is streamed into a temporary file in the same
folder while it is hashed, flushed with ``fsync``, then renamed to its key, so a reader never sees half an object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlitedos.repository.abstract import (
    CHUNK_SIZE,
    AbstractRepositoryBackend,
    ObjectNotFoundError,
    VerifyingReader,
    check_key,
)

__all__ = ('SandboxShaRepositoryBackend',)

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
