"""A node's virtual file tree: files and folders whose content lives in the storage's repository by key.

The tree is serialised into the node's ``repository_metadata`` column exactly as aiida writes it
(``File.serialize()`` in ``aiida/repository/common.py``): a folder with children is ``{'o': {name: child}}``, an
empty folder (also the root of a node without files) is ``{}``, a file is ``{'k': key}``.

While the node is unstored its files wait in a private sandbox folder outside the storage (as aiida's do), so no
client's maintenance, aiida-core's included, can take an object that no row references yet for garbage. ``store()``
writes them into the repository right before the transaction that commits the row (``put_pending``;
content-addressed, so a retry after a failed commit is harmless) and then drops the sandbox (``discard_pending``).
The node's ``repository_metadata`` is updated after every change and written by ``store()``. Once the node is
stored its files cannot change.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, BinaryIO, Protocol

from sqlitedos.exceptions import CorruptStorage, InputValidationError, ModificationNotAllowed
from sqlitedos.repository.abstract import (
    CHUNK_SIZE,
    AbstractRepositoryBackend,
    NotAByteStreamError,
    ObjectNotFoundError,
    ReadOnlyStream,
)
from sqlitedos.repository.sandbox import PendingFiles, SandboxShaRepositoryBackend

__all__ = ('SELECT_REFERENCED_KEYS', 'File', 'FileType', 'NodeRepository', 'flatten', 'iter_keys', 'validate_path')

PathLike = str | PurePosixPath | os.PathLike[str] | None

#: Every repository key that the ``repository_metadata`` trees of a database's nodes reference, once each, parsed
#: in SQL (the storage's database and an archive's alike): a ``{'k': key}`` entry is the only place a text value
#: sits under key 'k' (a file or folder *named* 'k' has an object value). Callers may append ``ORDER BY tree.value``
#: or use it as a sub-query.
SELECT_REFERENCED_KEYS = """
SELECT DISTINCT tree.value
FROM db_dbnode AS node, json_tree(node.repository_metadata) AS tree
WHERE node.repository_metadata IS NOT NULL AND tree.key = 'k' AND tree.type = 'text'
"""


class FileType(enum.Enum):
    """The kind of an entry of the tree (aiida's ``FileType``)."""

    DIRECTORY = 0
    FILE = 1


class File:
    """An entry of the tree: a file with a repository ``key``, or a directory with child ``objects``."""

    __slots__ = ('_serialized', 'file_type', 'key', 'name', 'objects')

    def __init__(
        self,
        name: str = '',
        file_type: FileType = FileType.DIRECTORY,
        key: str | None = None,
        objects: dict[str, File] | None = None,
    ) -> None:
        self.name = name
        self.file_type = file_type
        self.key = key
        self.objects: dict[str, File] = objects if objects is not None else {}
        # The serialised form, kept until a child changes, so that re-serialising a large tree after one new file
        # rebuilds only the directories on that file's path. The cached dicts are never mutated once made.
        self._serialized: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f'File<{self.file_type.name.lower()}, name={self.name!r}, key={self.key!r}>'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and self.serialize() == other.serialize() and self.name == other.name

    def serialize(self) -> dict[str, Any]:
        """aiida's JSON form of this entry (see the module docstring)."""
        if self._serialized is None:
            if self.file_type is FileType.FILE:
                self._serialized = {'k': self.key}
            elif not self.objects:
                self._serialized = {}
            else:
                self._serialized = {'o': {name: child.serialize() for name, child in self.objects.items()}}
        return self._serialized

    @classmethod
    def from_serialized(cls, serialized: dict[str, Any], name: str = '') -> File:
        """Rebuild an entry from aiida's JSON form; ``InputValidationError`` if it is not of that shape."""
        if not isinstance(serialized, dict) or not set(serialized) <= {'k', 'o'} or len(serialized) > 1:
            raise InputValidationError(f'invalid repository metadata for {name!r}: {serialized!r}')
        if 'k' in serialized:
            return cls(name, FileType.FILE, key=serialized['k'])
        children = serialized.get('o', {})
        if not isinstance(children, dict):
            raise InputValidationError(f'invalid repository metadata for {name!r}: {serialized!r}')
        return cls(name, objects={child: cls.from_serialized(value, child) for child, value in children.items()})


def validate_path(path: PathLike) -> PurePosixPath:
    """A relative path inside a tree; ``InputValidationError`` if absolute or with ``..`` or empty parts.

    ``None``, ``''`` and ``'.'`` mean the root. A single trailing ``/`` is allowed.
    """
    if path is None:
        return PurePosixPath()
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise InputValidationError(f'a repository path must be a string or path, got {type(path).__name__}: {path!r}')
    if path.startswith('/'):
        raise InputValidationError(f'repository path {path!r} is absolute: give a path relative to the node root')
    parts = path[:-1].split('/') if path.endswith('/') else path.split('/')
    if path in ('', '.'):
        return PurePosixPath()
    for part in parts:
        if part in ('', '..') or '\x00' in part:
            raise InputValidationError(
                f'repository path {path!r} has an invalid part {part!r}: no empty parts, no `..`, no NUL characters'
            )
    return PurePosixPath(*[part for part in parts if part != '.'])


def iter_keys(serialized: dict[str, Any] | None) -> Iterator[str]:
    """Every file key in a serialised tree (with repeats), without building ``File`` objects."""
    stack = [serialized or {}]
    while stack:
        entry = stack.pop()
        if 'k' in entry:
            yield entry['k']
        else:
            stack.extend(entry.get('o', {}).values())


def flatten(serialized: dict[str, Any] | None, prefix: str = '') -> dict[str, str | None]:
    """aiida's ``Repository.flatten``: ``{path: key}`` for files and ``{'dir/': None}`` for directories."""
    items: dict[str, str | None] = {}
    for name, child in (serialized or {}).get('o', {}).items():
        if 'k' in child:
            items[prefix + name] = child['k']
        else:
            items[prefix + name + '/'] = None
            items.update(flatten(child, prefix + name + '/'))
    return items


class BackendNode(Protocol):
    """What ``NodeRepository`` needs of a backend node."""

    repository_metadata: dict[str, Any]
    is_stored: bool

    @property
    def backend(self) -> Any: ...


class NodeRepository:
    """The file API of one node: put, list, open, walk, delete and copy files; immutable once the node is stored."""

    def __init__(self, node: BackendNode) -> None:
        self._node = node
        self._root = File.from_serialized(node.repository_metadata or {})
        self._batch = False
        # The files put while the node is unstored (None until the first one).
        self._pending: PendingFiles | None = None

    def __repr__(self) -> str:
        return f'NodeRepository<{len(list(self.glob()))} files>'

    # --- state --------------------------------------------------------------------------------------------------

    @property
    def backend(self) -> AbstractRepositoryBackend:
        """The repository backend of the node's storage."""
        return self._node.backend.get_repository()

    def serialize(self) -> dict[str, Any]:
        """The tree in aiida's ``repository_metadata`` form."""
        return self._root.serialize()

    def _check_mutable(self) -> None:
        if self._node.is_stored:
            raise ModificationNotAllowed(
                'the files of a stored node cannot be changed: store the new files on a new (unstored) node'
            )

    def _changed(self, directory: PurePosixPath = PurePosixPath()) -> None:
        """Record that the children of ``directory`` changed: drop the cached forms on its path, update the node."""
        entry: File | None = self._root
        self._root._serialized = None
        for part in directory.parts:
            entry = entry.objects.get(part)  # type: ignore[union-attr]
            if entry is None:
                break
            entry._serialized = None
        if not self._batch:  # a whole tree is serialised once at its end, not once per file
            self._node.repository_metadata = self.serialize()

    # --- reading the tree ---------------------------------------------------------------------------------------

    def get_object(self, path: PathLike = None) -> File:
        """The entry at ``path``; ``FileNotFoundError`` (``ObjectNotFoundError``) if absent."""
        path = validate_path(path)
        entry = self._root
        for depth, part in enumerate(path.parts):
            if entry.file_type is FileType.FILE:
                raise NotADirectoryError(f'`{PurePosixPath(*path.parts[:depth])}` is a file, not a directory')
            if part not in entry.objects:
                raise ObjectNotFoundError(f'file or directory `{path}` does not exist')
            entry = entry.objects[part]
        return entry

    def _get_directory(self, path: PathLike) -> File:
        entry = self.get_object(path)
        if entry.file_type is not FileType.DIRECTORY:
            raise NotADirectoryError(f'`{validate_path(path)}` is a file, not a directory')
        return entry

    def _get_file(self, path: PathLike) -> File:
        entry = self.get_object(path)
        if entry.file_type is not FileType.FILE:
            raise IsADirectoryError(f'`{validate_path(path)}` is a directory, not a file')
        return entry

    def has_object(self, path: PathLike) -> bool:
        """Whether a file or directory exists at ``path``."""
        try:
            self.get_object(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def list_objects(self, path: PathLike = None) -> list[File]:
        """The entries of the directory ``path``, sorted by name."""
        directory = self._get_directory(path)
        return sorted(directory.objects.values(), key=lambda entry: entry.name)

    def list_object_names(self, path: PathLike = None) -> list[str]:
        """The names of the entries of the directory ``path``, sorted."""
        return [entry.name for entry in self.list_objects(path)]

    def walk(self, path: PathLike = None) -> Iterator[tuple[PurePosixPath, list[str], list[str]]]:
        """Like ``os.walk`` (top-down): ``(directory path, directory names, file names)`` for each directory."""
        top = validate_path(path)
        stack = [(top, self._get_directory(top))]
        while stack:
            root, directory = stack.pop(0)
            entries = sorted(directory.objects.values(), key=lambda entry: entry.name)
            dirnames = [entry.name for entry in entries if entry.file_type is FileType.DIRECTORY]
            filenames = [entry.name for entry in entries if entry.file_type is FileType.FILE]
            yield root, dirnames, filenames
            stack[:0] = [(root / name, directory.objects[name]) for name in dirnames]

    def glob(self) -> Iterator[PurePosixPath]:
        """The path of every file in the tree."""
        for root, _, filenames in self.walk():
            for name in filenames:
                yield root / name

    def pending_keys(self) -> list[str]:
        """The keys of the files while the node is unstored (none once stored: then the database holds them)."""
        return [] if self._node.is_stored else self.get_file_keys()

    def get_file_keys(self) -> list[str]:
        """The repository key of every file (with repeats when files share content)."""
        return list(iter_keys(self.serialize()))

    # --- reading content ----------------------------------------------------------------------------------------

    def open(self, path: PathLike, mode: str = 'rb') -> Any:
        """A context manager yielding the file at ``path`` opened for reading, ``'rb'`` (bytes) or ``'r'`` (text)."""
        if mode not in ('r', 'rb'):
            raise InputValidationError(f"invalid mode {mode!r} to open a node file: expected 'r' or 'rb'")
        key = self._get_file(path).key
        pending = self._pending
        backend = pending if pending is not None and pending.has(key) else self.backend  # type: ignore[arg-type]
        return _open_key(backend, key, mode)  # type: ignore[arg-type]

    def get_object_content(self, path: PathLike, mode: str = 'r') -> str | bytes:
        """The whole content of the file at ``path``: ``str`` with ``mode='r'``, ``bytes`` with ``'rb'``."""
        with self.open(path, mode) as handle:
            return handle.read()

    def copy_tree(self, target: str | os.PathLike[str], path: PathLike = None) -> None:
        """Write the files under ``path`` into the folder ``target`` (created if needed), streaming each file."""
        top = validate_path(path)
        target = Path(target)
        for root, dirnames, filenames in self.walk(top):
            folder = target / root.relative_to(top)
            folder.mkdir(parents=True, exist_ok=True)
            for name in dirnames:
                (folder / name).mkdir(exist_ok=True)
            for name in filenames:
                with self.open(root / name) as source, open(folder / name, 'wb') as destination:
                    shutil.copyfileobj(source, destination, CHUNK_SIZE)

    def hash(self) -> str:
        """A sha256 over the tree's paths and file keys (cheap: no content is read; not aiida's ``make_hash``)."""
        return hashlib.sha256(json.dumps(flatten(self.serialize()), sort_keys=True).encode()).hexdigest()

    # --- writing ------------------------------------------------------------------------------------------------

    def put_object_from_filelike(self, handle: BinaryIO, path: PathLike) -> None:
        """Store the content of a binary stream as the file ``path`` (replacing a file there)."""
        self._check_mutable()
        path = self._check_file_path(path)
        if not isinstance(handle, (io.BufferedIOBase, io.RawIOBase)) and not (
            hasattr(handle, 'read') and 'b' in getattr(handle, 'mode', '')
        ):
            raise NotAByteStreamError(
                f'cannot store {type(handle).__name__} as `{path}`: it is not a binary stream; open files in '
                "binary mode ('rb') or wrap text in io.BytesIO(text.encode())"
            )
        backend = self.backend
        if isinstance(backend, SandboxShaRepositoryBackend):
            key = backend.put_object_from_filelike(handle)  # a private repository (temp storage): nobody to race
        else:
            key = self._pending_files().put(handle)
        self._insert(path, File(path.name, FileType.FILE, key=key))

    def _pending_files(self) -> PendingFiles:
        """Where this node's unstored files wait (created on first use)."""
        if self._pending is None:
            self._pending = PendingFiles()
        return self._pending

    def put_pending(self) -> None:
        """Write the files waiting in the sandbox into the repository; ``store()`` calls it right before its commit.

        The keys are held (``AbstractRepositoryBackend.hold_unstored``) so that maintenance in this process keeps them
        until the row is committed. Calling it again (a retry after a failed commit) writes nothing new.
        """
        pending = self._pending
        if pending is None or self._node.is_stored:
            return
        backend = self.backend
        backend.hold_unstored(self)
        for key in sorted(set(self.get_file_keys())):
            if not pending.has(key):
                continue  # a file copied from a stored node: its object is in the repository already
            with pending.open(key) as handle:
                written = backend.put_object_from_filelike(handle)
            if written != key:
                raise CorruptStorage(f'the unstored file with key {key} was written to the repository as {written}')

    def discard_pending(self) -> None:
        """Drop the waiting files once the node is stored (they are then in the repository)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.erase()

    def share_pending(self, other: NodeRepository) -> None:
        """Give ``other`` (the tree of a clone) the unstored files of this tree."""
        if self._pending is not None:
            self._pending.copy_into(other._pending_files())

    def put_object_from_bytes(self, content: bytes, path: PathLike) -> None:
        """Store ``content`` as the file ``path``."""
        self.put_object_from_filelike(io.BytesIO(content), path)

    def put_object_from_file(self, filepath: str | os.PathLike[str], path: PathLike) -> None:
        """Store the content of the file at ``filepath`` (a real file) as the file ``path``."""
        self._check_mutable()
        with open(filepath, 'rb') as handle:
            self.put_object_from_filelike(handle, path)

    def put_object_from_tree(self, filepath: str | os.PathLike[str], path: PathLike = None) -> None:
        """Store every file and folder under the real folder ``filepath`` at ``path`` (the root by default)."""
        self._check_mutable()
        source = Path(filepath)
        if not source.is_absolute():
            raise InputValidationError(f'the folder to store {str(filepath)!r} must be an absolute path')
        if not source.is_dir():
            raise NotADirectoryError(f'{str(filepath)!r} is not a folder')
        top = validate_path(path)
        self._batch = True
        try:
            self.create_directory(top)
            for dirpath, dirnames, filenames in os.walk(source):
                base = top.joinpath(*Path(dirpath).relative_to(source).parts)
                for name in sorted(dirnames):
                    self.create_directory(base / name)
                for name in sorted(filenames):
                    self.put_object_from_file(Path(dirpath) / name, base / name)
        finally:
            self._batch = False
            self._changed()

    def create_directory(self, path: PathLike) -> File:
        """Create the directory ``path`` and its parents (an existing directory is fine)."""
        self._check_mutable()
        entry = self._root
        for part in validate_path(path).parts:
            child = entry.objects.get(part)
            if child is None:
                child = entry.objects[part] = File(part)
            elif child.file_type is FileType.FILE:
                raise NotADirectoryError(f'cannot create directory `{path}`: `{part}` is a file')
            entry = child
        self._changed(validate_path(path))
        return entry

    def delete_object(self, path: PathLike) -> None:
        """Remove the file or empty directory ``path`` from the tree (the content stays in the repository until
        maintenance deletes what no node references)."""
        self._check_mutable()
        path = self._check_file_path(path)
        entry = self.get_object(path)
        if entry.file_type is FileType.DIRECTORY and entry.objects:
            raise OSError(f'cannot delete `{path}`: it is a directory that is not empty')
        del self._get_directory(path.parent).objects[path.name]
        self._changed(path.parent)

    def erase(self) -> None:
        """Remove every file and directory from the tree."""
        self._check_mutable()
        self._root = File()
        self._changed()

    def _check_file_path(self, path: PathLike) -> PurePosixPath:
        path = validate_path(path)
        if not path.parts:
            raise InputValidationError('a file path is needed here, not the root of the tree')
        return path

    def _insert(self, path: PurePosixPath, entry: File) -> None:
        batch, self._batch = self._batch, True
        try:
            directory = self.create_directory(path.parent)
        finally:
            self._batch = batch
        existing = directory.objects.get(path.name)
        if existing is not None and existing.file_type is FileType.DIRECTORY:
            raise IsADirectoryError(f'cannot store a file as `{path}`: it is a directory')
        directory.objects[path.name] = entry
        self._changed(path.parent)


class _KeyReader:
    """Context manager opening a repository object as bytes or as UTF-8 text."""

    def __init__(self, backend: AbstractRepositoryBackend, key: str, mode: str) -> None:
        self._context = backend.open(key)
        self._mode = mode

    def __enter__(self) -> IO[Any]:
        handle = self._context.__enter__()
        if self._mode == 'r':
            return io.TextIOWrapper(io.BufferedReader(_Unclosable(handle), CHUNK_SIZE), encoding='utf-8', newline='')
        return handle

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool | None:
        return self._context.__exit__(exc_type, exc, traceback)


def _open_key(backend: AbstractRepositoryBackend, key: str, mode: str) -> _KeyReader:
    return _KeyReader(backend, key, mode)


class _Unclosable(ReadOnlyStream):
    """A read-only proxy that TextIOWrapper may 'close' without closing the object stream under it."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read(size)
        self._position += len(data)
        return data
