"""Bulk access to a storage's repository for archive creation and import.

A folder storage's disk-objectstore container is used directly for its bulk APIs (``get_objects_stream_and_meta``
to read, ``add_streamed_objects_to_pack`` to write); any other repository goes through the repository API.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from sqlitedos.exceptions import CorruptStorage, ImportValidationError

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('has_objects', 'open_repository', 'read_objects', 'repository_is_empty', 'write_objects')


@contextlib.contextmanager
def open_repository(storage: StorageBackend) -> Iterator[Any]:
    """The storage's repository backend; one made here for a folder storage without ``get_repository`` is closed."""
    getter = getattr(storage, 'get_repository', None)
    if getter is not None:
        yield getter()
        return
    folder = getattr(storage, 'filepath_container', None)
    if folder is None:
        raise NotImplementedError(f'{type(storage).__name__} has no repository to read or write files with')
    from sqlitedos.repository.disk_objectstore import DiskObjectStoreRepositoryBackend

    repository = DiskObjectStoreRepositoryBackend(folder)
    try:
        yield repository
    finally:
        repository.close()


def _container(repository: Any) -> Any:
    """The disk-objectstore container behind a repository, or None."""
    from sqlitedos.repository.disk_objectstore import DiskObjectStoreRepositoryBackend

    if isinstance(repository, DiskObjectStoreRepositoryBackend):
        return repository.container
    return None


def read_objects(repository: Any, keys: Sequence[str]) -> Iterator[tuple[str, IO[bytes], int | None]]:
    """Yield ``(key, stream, size or None)`` for each key (in the repository's order); a missing key is an error."""
    container = _container(repository)
    if container is None:
        for key, stream in repository.iter_object_streams(list(keys)):
            yield key, stream, None
        return
    with container.get_objects_stream_and_meta(list(keys), skip_if_missing=False) as triplets:
        for key, stream, meta in triplets:
            if stream is None:
                raise CorruptStorage(
                    f'the repository object {key} that a node references is missing from the storage; run '
                    '`sqlitedos verify` to find the damage'
                )
            yield key, stream, meta.size  # attribute access: meta['size'] deep-copies the dataclass


class _HashingReader:
    """Wraps a stream, hashing everything read through it (to check a key while the content streams in)."""

    mode = 'rb'

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        return data


class _LazyMember:
    """A context manager opening one archive object only when the container gets to it."""

    def __init__(self, opener: Callable[[str], Any], key: str) -> None:
        self._opener = opener
        self.key = key
        self._context: Any = None

    def __enter__(self) -> IO[bytes]:
        self._context = self._opener(self.key)
        return self._context.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._context.__exit__(*exc_info)


def _mismatch(key: str, got: str) -> ImportValidationError:
    return ImportValidationError(
        f'the archive object repo/{key} is corrupt: its content hashes to {got}, not to its name; the archive is '
        'damaged (nothing was imported)'
    )


def write_objects(repository: Any, keys: Sequence[str], opener: Callable[[str], Any]) -> None:
    """Stream the objects ``keys`` (opened with ``opener(key)``, a context manager) into the repository.

    Each object's sha256 is checked against its key; a mismatch raises ``ImportValidationError`` (what was
    written stays as an unreferenced object that ``maintain`` removes).
    """
    container = _container(repository)
    if container is not None:
        with repository.packing():
            hashes = container.add_streamed_objects_to_pack(
                [_LazyMember(opener, key) for key in keys], open_streams=True, do_fsync=True
            )
        for key, got in zip(keys, hashes):
            if key != got:
                raise _mismatch(key, got)
        return
    for key in keys:
        with opener(key) as stream:
            reader = _HashingReader(stream)
            got = repository.put_object_from_filelike(reader)  # type: ignore[arg-type]
        if got != key:
            raise _mismatch(key, got)


def has_objects(repository: Any, keys: Sequence[str]) -> list[bool]:
    """Whether each key exists in the repository."""
    container = _container(repository)
    if container is not None:
        return container.has_objects(list(keys))
    return repository.has_objects(list(keys))


def repository_is_empty(repository: Any) -> bool:
    """Whether the repository holds no object at all (stops at the first one found)."""
    container = _container(repository)
    objects = container.list_all_objects() if container is not None else repository.list_objects()
    return next(iter(objects), None) is None
