"""The ``.aiida`` archive layout (SPEC 6): member names, ``metadata.json``, reading a zip or an unpacked folder, and
writing a zip in aiida's member order.

Member names read from an archive are never trusted: only ``metadata.json``, ``db.sqlite3`` and
``repo/<64 hex>`` are accepted (directory entries and ``__MACOSX/`` are ignored); anything else, including
absolute paths and ``..``, makes the archive ``CorruptStorage``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import zipfile
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable, Iterator

from sqlitedos.exceptions import CorruptStorage, IncompatibleStorageSchema, ImportValidationError

__all__ = (
    'ARCHIVE_VERSION',
    'ArchiveReader',
    'ArchiveWriter',
    'DATABASE_NAME',
    'METADATA_NAME',
    'Progress',
    'REPO_PREFIX',
    'report',
)

#: The only archive version this code reads and writes (aiida-core 2.x's ``sqlite_zip`` head).
ARCHIVE_VERSION = 'main_0001'
#: The aiida-core version whose archive format we write.
AIIDA_VERSION = '2.9.4'
METADATA_NAME = 'metadata.json'
DATABASE_NAME = 'db.sqlite3'
REPO_PREFIX = 'repo/'
#: aiida's reader looks for these members only among the first records of the central directory.
METADATA_MAX_INDEX = 10
DATABASE_MAX_INDEX = 4
#: Bytes per read when copying between zip members, files and containers.
COPY_CHUNK = 1024 * 1024
_KEY = re.compile(r'[0-9a-f]{64}')

#: ``progress(stage, done, total)``, called as each stage advances.
Progress = Callable[[str, int, int], None]


def report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    """Call the progress callback, if there is one."""
    if progress is not None:
        progress(stage, done, total)


def classify_member(name: str) -> str | None:
    """``'metadata'``, ``'database'``, ``'object'``, or None for an entry to ignore; ``CorruptStorage`` otherwise."""
    if name.endswith('/') or name.startswith('__MACOSX/'):
        if '..' in name.split('/') or name.startswith('/'):
            raise CorruptStorage(f'the archive has an unsafe member name {name!r}: refusing to read it')
        return None
    if name == METADATA_NAME:
        return 'metadata'
    if name == DATABASE_NAME:
        return 'database'
    if name.startswith(REPO_PREFIX) and _KEY.fullmatch(name[len(REPO_PREFIX):]):
        return 'object'
    if name.startswith(('/', '\\')) or '..' in re.split(r'[/\\]', name) or re.match(r'^[A-Za-z]:', name):
        raise CorruptStorage(f'the archive has an unsafe member name {name!r} (absolute or with ..): refusing it')
    raise CorruptStorage(
        f'the archive has an unexpected member {name!r}: expected only {METADATA_NAME}, {DATABASE_NAME} and '
        f'{REPO_PREFIX}<sha256>'
    )


def check_metadata(metadata: Any, where: str, check_version: bool = True) -> dict[str, Any]:
    """Return the metadata if its ``export_version`` is ours; ``IncompatibleStorageSchema`` or ``CorruptStorage``."""
    if not isinstance(metadata, dict) or 'export_version' not in metadata:
        raise CorruptStorage(f'the archive {where!r} has no export_version in {METADATA_NAME}')
    version = metadata['export_version']
    if check_version and version != ARCHIVE_VERSION:
        raise IncompatibleStorageSchema(
            f'The archive {where!r} is at version {version!r} but sqlitedos reads only {ARCHIVE_VERSION!r}: migrate '
            'it with `verdi archive migrate` (aiida-core) first.'
        )
    return metadata


class ArchiveReader:
    """Read access to an archive: a ``.aiida`` zip file or an unpacked folder; a context manager.

    Opening checks the member names, reads ``metadata.json`` and checks the version.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_version: bool = True) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.metadata = check_metadata(self._read_json(self.path / METADATA_NAME), str(self.path), check_version)
            if not (self.path / DATABASE_NAME).is_file():
                raise CorruptStorage(f'the archive folder {str(self.path)!r} has no {DATABASE_NAME}')
            return
        if not self.path.is_file():
            raise CorruptStorage(f'the archive {str(self.path)!r} does not exist')
        try:
            self._zip = zipfile.ZipFile(self.path, 'r')
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CorruptStorage(f'{str(self.path)!r} is not a readable .aiida archive (zip file): {exc}') from exc
        try:
            self._check_members()
            with self._zip_member(METADATA_NAME) as handle:
                self.metadata = check_metadata(self._parse_json(handle.read()), str(self.path), check_version)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _parse_json(data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CorruptStorage(f'the archive {METADATA_NAME} is not valid JSON: {exc}') from exc

    def _read_json(self, path: Path) -> Any:
        if not path.is_file():
            raise CorruptStorage(f'the archive folder {str(self.path)!r} has no {METADATA_NAME}')
        return self._parse_json(path.read_bytes())

    def _check_members(self) -> None:
        assert self._zip is not None
        found: dict[str, int] = {}
        for index, info in enumerate(self._zip.infolist()):
            kind = classify_member(info.filename)
            if kind in ('metadata', 'database'):
                found.setdefault(kind, index)
        if 'metadata' not in found:
            raise CorruptStorage(f'the archive {str(self.path)!r} has no {METADATA_NAME}')
        if 'database' not in found:
            raise CorruptStorage(f'the archive {str(self.path)!r} has no {DATABASE_NAME}')
        if found['metadata'] >= METADATA_MAX_INDEX or found['database'] >= DATABASE_MAX_INDEX:
            raise CorruptStorage(
                f'the archive {str(self.path)!r} lists {METADATA_NAME}/{DATABASE_NAME} too late in its central '
                'directory for aiida-core to read it'
            )

    @contextlib.contextmanager
    def _zip_member(self, name: str) -> Iterator[IO[bytes]]:
        assert self._zip is not None
        try:
            with self._zip.open(name) as handle:
                yield handle
        except (zipfile.BadZipFile, EOFError, zlib_error()) as exc:
            raise CorruptStorage(f'the archive member {name!r} of {str(self.path)!r} is damaged: {exc}') from exc

    @property
    def is_folder(self) -> bool:
        return self._zip is None

    def close(self) -> None:
        """Close the zip file (idempotent)."""
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def database_path(self) -> Path | None:
        """The path of ``db.sqlite3`` of an unpacked folder (None for a zip: extract it instead)."""
        return self.path / DATABASE_NAME if self._zip is None else None

    def extract_database(self, destination: Path) -> Path:
        """Copy ``db.sqlite3`` to ``destination`` in chunks and return it."""
        source = self.database_path()
        with open(destination, 'wb') as target:
            if source is not None:
                with open(source, 'rb') as handle:
                    shutil.copyfileobj(handle, target, COPY_CHUNK)
            else:
                with self._zip_member(DATABASE_NAME) as handle:
                    copy_stream(handle, target, DATABASE_NAME)
        return destination

    def has_object(self, key: str) -> bool:
        """Whether the archive holds the repository object ``key``."""
        if not _KEY.fullmatch(key):
            return False
        if self._zip is None:
            return (self.path / 'repo' / key).is_file()
        try:
            self._zip.getinfo(REPO_PREFIX + key)
        except KeyError:
            return False
        return True

    def object_keys(self) -> Iterator[str]:
        """Every repository key in the archive."""
        if self._zip is None:
            folder = self.path / 'repo'
            if folder.is_dir():
                yield from (entry.name for entry in os.scandir(folder) if _KEY.fullmatch(entry.name))
            return
        for info in self._zip.infolist():
            if classify_member(info.filename) == 'object':
                yield info.filename[len(REPO_PREFIX):]

    @contextlib.contextmanager
    def open_object(self, key: str) -> Iterator[BinaryIO]:
        """A binary stream of the object ``key``; ``ImportValidationError`` if the archive lacks it."""
        if not self.has_object(key):
            raise ImportValidationError(f'the archive {str(self.path)!r} lacks the repository object {key}')
        if self._zip is None:
            with open(self.path / 'repo' / key, 'rb') as handle:
                yield handle
        else:
            with self._zip_member(REPO_PREFIX + key) as handle:
                yield handle  # type: ignore[misc]


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def copy_stream(source: IO[bytes], target: IO[bytes], name: str) -> int:
    """Copy in chunks; return the number of bytes. Zip damage found while reading becomes ``CorruptStorage``."""
    copied = 0
    try:
        while True:
            chunk = source.read(COPY_CHUNK)
            if not chunk:
                return copied
            target.write(chunk)
            copied += len(chunk)
    except (zipfile.BadZipFile, EOFError, zlib_error()) as exc:
        raise CorruptStorage(f'the archive member {name!r} is damaged: {exc}') from exc


class ArchiveWriter:
    """Writes a new zip in aiida's layout: repository members, then ``db.sqlite3``, then ``metadata.json``, with the
    central directory listing ``metadata.json`` and ``db.sqlite3`` first (as aiida's reader requires)."""

    def __init__(self, path: Path, compression: int = 6) -> None:
        if not 0 <= compression <= 9:
            raise ValueError(f'compression must be an integer from 0 to 9, got {compression!r}')
        self.compression = compression
        self._method = zipfile.ZIP_DEFLATED if compression else zipfile.ZIP_STORED
        self._zip = zipfile.ZipFile(path, 'w', compression=self._method, compresslevel=compression, allowZip64=True)
        self._date_time = dt.datetime.now().timetuple()[:6]

    def _info(self, name: str, method: int, size: int | None = None) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self._date_time)
        info.compress_type = method
        info._compresslevel = self.compression if method == zipfile.ZIP_DEFLATED else None  # type: ignore[attr-defined]
        info.external_attr = 0o644 << 16
        if size is not None:
            info.file_size = size
        return info

    def write_object(self, key: str, stream: IO[bytes], size: int | None = None) -> None:
        """Add ``repo/<key>`` from a stream; without a known size the member gets ZIP64 headers (as aiida's)."""
        info = self._info(REPO_PREFIX + key, self._method, size)
        with self._zip.open(info, 'w', force_zip64=size is None) as target:
            shutil.copyfileobj(stream, target, COPY_CHUNK)

    def write_database(self, path: Path) -> None:
        """Add ``db.sqlite3`` from a file, compressed at the archive's level."""
        info = self._info(DATABASE_NAME, self._method, path.stat().st_size)
        with open(path, 'rb') as source, self._zip.open(info, 'w') as target:
            shutil.copyfileobj(source, target, COPY_CHUNK)

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        """Add ``metadata.json`` (stored, ``json.dumps`` default formatting)."""
        self._zip.writestr(self._info(METADATA_NAME, zipfile.ZIP_STORED), json.dumps(metadata).encode('utf-8'))

    def close(self) -> None:
        """Write the central directory, ``metadata.json`` and ``db.sqlite3`` first, and close the file."""
        first = [info for info in self._zip.filelist if info.filename in (METADATA_NAME, DATABASE_NAME)]
        first.sort(key=lambda info: info.filename != METADATA_NAME)
        rest = [info for info in self._zip.filelist if info.filename not in (METADATA_NAME, DATABASE_NAME)]
        self._zip.filelist[:] = first + rest
        self._zip.close()

    def abort(self) -> None:
        """Close the file without caring about its content (the caller deletes it)."""
        with contextlib.suppress(Exception):
            self._zip.close()


def open_database_readonly(path: Path) -> sqlite3.Connection:
    """A plain read-only connection to an archive database (no pragmas: it may be any aiida variant)."""
    return sqlite3.connect(f'{path.absolute().as_uri()}?mode=ro', uri=True, isolation_level=None)
