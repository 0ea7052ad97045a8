"""The repository backend API (aiida's ``aiida.repository.backend.abstract``): a store of byte objects by key.

Every backend here is content-addressed: the key of an object is the sha256 hex digest of its content, so storing
the same content twice stores it once, and a retried write is harmless.
"""

from __future__ import annotations

import abc
import contextlib
import io
import re
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sqlitedos.exceptions import CorruptStorage, InputValidationError, NotExistent

__all__ = (
    'CHUNK_SIZE',
    'AbstractRepositoryBackend',
    'NotAByteStreamError',
    'ObjectNotFoundError',
    'ReadOnlyStream',
    'VerifyingReader',
    'check_key',
    'sha256_of_stream',
)

#: Bytes read or written per step when streaming content; large files never sit whole in memory.
CHUNK_SIZE = 1024 * 1024
_SHA256_KEY = re.compile(r'[0-9a-f]{64}')


class ObjectNotFoundError(FileNotFoundError, NotExistent):
    """No object with the requested key exists (a ``FileNotFoundError``, as aiida raises, and a ``NotExistent``)."""


class NotAByteStreamError(TypeError, InputValidationError):
    """A handle given to store content is not a readable binary stream (a ``TypeError``, as aiida raises)."""


def check_key(key: Any) -> str:
    """Return ``key`` if it is a sha256 key (64 lowercase hex characters), else raise ``InputValidationError``."""
    if not isinstance(key, str) or _SHA256_KEY.fullmatch(key) is None:
        raise InputValidationError(f'invalid repository key {key!r}: expected 64 lowercase hexadecimal characters')
    return key


def _sha256() -> Any:
    """A new sha256 hash object; ``hashlib`` (a few ms with OpenSSL) is imported on first use, not on open."""
    import hashlib

    return hashlib.sha256()


def sha256_of_stream(handle: BinaryIO) -> str:
    """The sha256 hex digest of everything left in a binary stream, read in chunks."""
    digest = _sha256()
    for chunk in iter(lambda: handle.read(CHUNK_SIZE), b''):
        digest.update(chunk)
    return digest.hexdigest()


class ReadOnlyStream(io.RawIOBase):
    """Base of the read-only binary streams here: subclasses give ``read(size)`` and keep ``_position``."""

    mode = 'rb'
    _position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class VerifyingReader(ReadOnlyStream):
    """A read-only view of an object's stream that checks, on reaching the end, that the content hashes to its key.

    The check is made only when the content was read in order from the start (a ``seek`` elsewhere turns it off,
    ``seek(0)`` restarts it); a mismatch raises ``CorruptStorage`` from the read that hit the end.
    """

    def __init__(self, stream: BinaryIO, key: str) -> None:
        super().__init__()
        self._stream = stream
        self._key = key
        self._digest: Any = _sha256()
        self._position = 0
        self._hashed = 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._stream.seek(offset, whence)
        if self._position == 0:
            self._digest, self._hashed = _sha256(), 0
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        data = self._stream.read(size)
        if self._digest is not None and self._position != self._hashed:
            self._digest = None
        self._position += len(data)
        if self._digest is not None:
            self._digest.update(data)
            self._hashed = self._position
            if size < 0 or (size > 0 and not data):
                self._check()
        return data

    def _check(self) -> None:
        digest, self._digest = self._digest, None
        if digest.hexdigest() != self._key:
            raise CorruptStorage(
                f'the repository object {self._key} is corrupt: its content hashes to {digest.hexdigest()}; '
                'restore it from a backup (or delete the object and store the file again)'
            )


class AbstractRepositoryBackend(abc.ABC):
    """Stores and retrieves byte streams by key; the keys are chosen by the backend."""

    @property
    @abc.abstractmethod
    def uuid(self) -> str | None:
        """The identity of the repository, or None if it has none."""

    @property
    @abc.abstractmethod
    def key_format(self) -> str | None:
        """The key scheme: ``'sha256'`` for every backend of sqlitedos."""

    @abc.abstractmethod
    def initialise(self, **kwargs: Any) -> None:
        """Create the repository if needed."""

    @property
    @abc.abstractmethod
    def is_initialised(self) -> bool:
        """Whether the repository exists."""

    @abc.abstractmethod
    def erase(self) -> None:
        """Delete the repository itself and all its content (a missing repository is fine)."""

    @staticmethod
    def is_readable_byte_stream(handle: Any) -> bool:
        """Whether ``handle`` can be read and yields bytes (aiida's test: has ``read`` and a ``mode`` with ``b``)."""
        return hasattr(handle, 'read') and 'b' in getattr(handle, 'mode', '')

    def put_object_from_filelike(self, handle: BinaryIO) -> str:
        """Store the content of a binary stream and return its key; ``TypeError`` for a text or non-stream handle."""
        if not isinstance(handle, (io.BufferedIOBase, io.RawIOBase)) and not self.is_readable_byte_stream(handle):
            raise NotAByteStreamError(
                f'handle does not seem to be a byte stream: {type(handle).__name__}; open files in binary mode '
                "('rb') or wrap bytes in io.BytesIO"
            )
        return self._put_object_from_filelike(handle)

    def hold_unstored(self, tree: Any) -> None:
        """Remember (weakly) the file tree of a node being stored: its files are in the repository, its row not yet.

        ``NodeRepository.put_pending`` calls it; ``tree.pending_keys()`` lists the keys until the node is stored, and
        maintenance in this process leaves them alone (``keys_held``).
        """
        self.__dict__.setdefault('_unstored_trees', weakref.WeakSet()).add(tree)

    def keys_held(self) -> set[str]:
        """The keys of the files of unstored nodes alive in this process (see ``hold_unstored``)."""
        trees = list(self.__dict__.get('_unstored_trees', ()))
        return {key for tree in trees for key in tree.pending_keys()}

    @abc.abstractmethod
    def _put_object_from_filelike(self, handle: BinaryIO) -> str:
        """Store the content of an already validated binary stream and return its key."""

    def put_object_from_file(self, filepath: str | Path) -> str:
        """Store the content of the file at ``filepath`` and return its key."""
        with open(filepath, 'rb') as handle:
            return self._put_object_from_filelike(handle)

    @abc.abstractmethod
    def has_objects(self, keys: list[str]) -> list[bool]:
        """Whether each key exists, in the order given."""

    def has_object(self, key: str) -> bool:
        """Whether the object ``key`` exists."""
        return self.has_objects([key])[0]

    @abc.abstractmethod
    def list_objects(self) -> Iterable[str]:
        """Every key in the repository."""

    @abc.abstractmethod
    def get_info(self, detailed: bool = False) -> dict[str, Any]:
        """Statistics of the repository."""

    @abc.abstractmethod
    def maintain(self, dry_run: bool = False, live: bool = True, **kwargs: Any) -> None:
        """Optimise the repository; ``live`` restricts to what is safe while it is in use."""

    @abc.abstractmethod
    def open(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A context manager yielding a readable binary stream of object ``key``; ``ObjectNotFoundError`` if absent."""

    def get_object_content(self, key: str) -> bytes:
        """The whole content of the object ``key``."""
        with self.open(key) as handle:
            return handle.read()

    @abc.abstractmethod
    def iter_object_streams(self, keys: Iterable[str]) -> Iterator[tuple[str, BinaryIO]]:
        """Yield ``(key, stream)`` for each key; a stream is valid only until the next step of the iteration."""

    def get_object_hash(self, key: str) -> str:
        """The sha256 hex digest of the content of the object ``key``."""
        with self.open(key) as handle:
            return sha256_of_stream(handle)

    def delete_objects(self, keys: list[str]) -> None:
        """Delete the objects; ``FileNotFoundError`` naming the missing keys (then nothing is deleted)."""
        keys = list(keys)
        missing = [key for key, exists in zip(keys, self.has_objects(keys)) if not exists]
        if missing:
            raise ObjectNotFoundError(f'objects with keys {missing} do not exist.')
        self._delete_objects(keys)

    @abc.abstractmethod
    def _delete_objects(self, keys: list[str]) -> None:
        """Delete the objects (all exist)."""

    def delete_object(self, key: str) -> None:
        """Delete the object ``key``; ``FileNotFoundError`` if it does not exist."""
        self.delete_objects([key])
