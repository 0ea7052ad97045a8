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
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from sqlitedos.archive.zipio import STORED, ZipIndex, ZipStreamWriter
from sqlitedos.db import JSON_MAX_DEPTH, connect, json_text_depth_exceeds
from sqlitedos.exceptions import AiidaException, CorruptStorage, ImportValidationError, IncompatibleStorageSchema

__all__ = (
    'ARCHIVE_VERSION',
    'DATABASE_NAME',
    'METADATA_NAME',
    'REPO_PREFIX',
    'ArchiveReader',
    'ArchiveWriter',
    'Progress',
    'report',
    'use_rollback_journal',
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
#: Objects up to this size are read whole and compressed in batches on threads; larger ones are streamed.
SMALL_OBJECT = 256 * 1024
#: Bytes of small objects held before a batch is compressed and written.
PENDING_BYTES = 2 * 1024 * 1024
COMPRESSION_THREADS = 2
#: The largest ``metadata.json`` read: aiida's holds the export parameters and the starting set (uuids of the
#: entities named at export, about 40 bytes each), a few kB for real archives.
METADATA_MAX_BYTES = 64 * 1024 * 1024
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
    if name.startswith(REPO_PREFIX) and _KEY.fullmatch(name[len(REPO_PREFIX) :]):
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

    Opening checks the member names, reads ``metadata.json`` and checks the version. A zip's central directory is
    indexed in a temporary SQLite file (``zipio.ZipIndex``), so memory does not grow with the number of members.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_version: bool = True) -> None:
        self.path = Path(path)
        self._zip: ZipIndex | None = None
        self._workdir: str | None = None
        if self.path.is_dir():
            self.metadata = check_metadata(self._read_json(self.path / METADATA_NAME), str(self.path), check_version)
            if not (self.path / DATABASE_NAME).is_file():
                raise CorruptStorage(f'the archive folder {str(self.path)!r} has no {DATABASE_NAME}')
            return
        if not self.path.is_file():
            raise CorruptStorage(f'the archive {str(self.path)!r} does not exist')
        self._workdir = tempfile.mkdtemp(prefix='sqlitedos-archive-')
        try:
            try:
                self._zip = ZipIndex(self.path, Path(self._workdir) / 'members.sqlite3')
            except (OSError, struct.error, UnicodeDecodeError, ValueError) as exc:
                raise CorruptStorage(f'{str(self.path)!r} is not a readable .aiida archive (zip file): {exc}') from exc
            self._check_members()
            member = self._zip.find(METADATA_NAME)
            self._check_metadata_size(member.size if member is not None else 0)
            self._zip.check_ratios()  # a zip bomb among the objects is refused before any of them is written
            with self._zip_member(METADATA_NAME) as handle:
                data = handle.read(METADATA_MAX_BYTES + 1)
            self._check_metadata_size(len(data))
            self.metadata = check_metadata(self._parse_json(data), str(self.path), check_version)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _parse_json(data: bytes) -> Any:
        if json_text_depth_exceeds(data):
            raise CorruptStorage(
                f'the archive {METADATA_NAME} nests deeper than {JSON_MAX_DEPTH} levels, which aiida never writes: '
                'refusing it'
            )
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CorruptStorage(f'the archive {METADATA_NAME} is not valid JSON: {exc}') from exc

    def _check_metadata_size(self, size: int) -> None:
        if size > METADATA_MAX_BYTES:
            raise CorruptStorage(
                f'the archive {METADATA_NAME} of {str(self.path)!r} is {size} bytes, more than the '
                f'{METADATA_MAX_BYTES} any real archive needs: refusing it'
            )

    def _read_json(self, path: Path) -> Any:
        if not path.is_file():
            raise CorruptStorage(f'the archive folder {str(self.path)!r} has no {METADATA_NAME}')
        self._check_metadata_size(path.stat().st_size)
        return self._parse_json(path.read_bytes())

    def _check_members(self) -> None:
        assert self._zip is not None
        found: dict[str, int] = {}
        for index, name in self._zip.names():
            kind = classify_member(name)
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
        member = self._zip.find(name)
        if member is None:
            raise ImportValidationError(f'the archive {str(self.path)!r} has no member {name!r}')
        with self._zip.open(member) as handle:
            yield handle  # type: ignore[misc]

    @property
    def is_folder(self) -> bool:
        return self._zip is None

    def close(self) -> None:
        """Close the zip file and delete the member index (idempotent)."""
        if self._zip is not None:
            self._zip.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

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
                    shutil.copyfileobj(handle, target, COPY_CHUNK)
        return destination

    def has_object(self, key: str) -> bool:
        """Whether the archive holds the repository object ``key``."""
        if not _KEY.fullmatch(key):
            return False
        if self._zip is None:
            return (self.path / 'repo' / key).is_file()
        return self._zip.find(REPO_PREFIX + key) is not None

    def first_missing_object(self, database: Path, table: str) -> str | None:
        """The first key in ``table`` (column ``key``) of the SQLite file ``database`` that the archive lacks."""
        if self._zip is not None:
            return self._zip.first_missing(database, table, REPO_PREFIX)
        connection = open_database_readonly(database)
        try:
            cursor = connection.execute(f'SELECT key FROM {table}')  # a constant of the caller
            return next((key for (key,) in cursor if not self.has_object(key)), None)
        finally:
            connection.close()

    def object_keys(self) -> Iterator[str]:
        """Every repository key in the archive."""
        if self._zip is None:
            folder = self.path / 'repo'
            if folder.is_dir():
                yield from (entry.name for entry in os.scandir(folder) if _KEY.fullmatch(entry.name))
            return
        for _, name in self._zip.names():
            if classify_member(name) == 'object':
                yield name[len(REPO_PREFIX) :]

    @contextlib.contextmanager
    def open_object(self, key: str) -> Iterator[BinaryIO]:
        """A binary stream of the object ``key``; ``ImportValidationError`` if the archive lacks it."""
        if not _KEY.fullmatch(key):
            raise ImportValidationError(f'invalid repository key {key!r} in the archive')
        if self._zip is None:
            try:
                with open(self.path / 'repo' / key, 'rb') as handle:
                    yield handle
            except FileNotFoundError as exc:
                raise ImportValidationError(f'the archive {str(self.path)!r} lacks the object {key}') from exc
        else:
            with self._zip_member(REPO_PREFIX + key) as handle:
                yield handle  # type: ignore[misc]


class ArchiveWriter:
    """Writes a new zip in aiida's layout: repository members, then ``db.sqlite3``, then ``metadata.json``, with the
    central directory listing ``metadata.json`` and ``db.sqlite3`` first (as aiida's reader requires).

    Compression runs on a small thread pool (zlib releases the GIL) while the caller goes on reading: the database
    (``start_database``) and batches of small objects. At most two batches of ``PENDING_BYTES`` are held, whatever
    the number of objects.
    """

    def __init__(self, path: Path, compression: int = 6) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if not 0 <= compression <= 9:
            raise ValueError(f'compression must be an integer from 0 to 9, got {compression!r}')
        self.compression = compression
        self._spill = path.with_name(path.name + '.directory')
        self._database = path.with_name(path.name + '.database')
        self._zip = ZipStreamWriter(path, self._spill, compression, dt.datetime.now().timetuple()[:6])
        self._pending: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=COMPRESSION_THREADS)
        self._in_flight: list[tuple[list[tuple[str, bytes]], Any]] = []
        self._database_job: Any = None

    def start_database(self, path: Path) -> None:
        """Begin compressing ``db.sqlite3`` from ``path`` in the background (``write_database`` adds it)."""
        self._database_job = self._pool.submit(self._compress_database, path)

    def _compress_database(self, path: Path) -> tuple[int, int, int]:
        with open(path, 'rb') as source, open(self._database, 'wb') as target:
            return self._zip.compress_stream(source, target)

    def write_object(self, key: str, stream: IO[bytes], size: int | None = None) -> None:
        """Add ``repo/<key>`` from a stream: small ones are batched for compression, others streamed."""
        if size is not None and size <= SMALL_OBJECT:
            data = stream.read()
            self._pending.append((REPO_PREFIX + key, data))
            self._pending_bytes += len(data)
            if self._pending_bytes >= PENDING_BYTES:
                self._submit()
            return
        self._drain()
        self._zip.write_stream(REPO_PREFIX + key, stream)

    def _submit(self) -> None:
        """Start compressing the pending batch; write out the batch before it (one batch stays in flight)."""
        if self._pending:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            step = max(1, len(pending) // (2 * COMPRESSION_THREADS))
            parts = [[data for _, data in pending[index : index + step]] for index in range(0, len(pending), step)]
            futures = [self._pool.submit(self._compress_all, part) for part in parts]
            self._in_flight.append((pending, futures))
        while len(self._in_flight) > 1:
            self._write_oldest()

    def _write_oldest(self) -> None:
        pending, futures = self._in_flight.pop(0)
        compressed = [item for future in futures for item in future.result()]
        for (name, data), stored in zip(pending, compressed):
            self._zip.write_bytes(name, data, stored)

    def _drain(self) -> None:
        self._submit()
        while self._in_flight:
            self._write_oldest()

    def _compress_all(self, datas: list[bytes]) -> list[bytes]:
        return [self._zip.compress(data) for data in datas]

    def write_database(self, path: Path) -> None:
        """Add ``db.sqlite3`` (compressed in the background if ``start_database`` was called)."""
        self._drain()
        if self._database_job is None:
            self.start_database(path)
        crc, size, stored = self._database_job.result()
        with open(self._database, 'rb') as source:
            self._zip.write_compressed(DATABASE_NAME, source, crc, size, stored, first=1)

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        """Add ``metadata.json`` (stored, ``json.dumps`` default formatting)."""
        self._drain()
        data = json.dumps(metadata).encode('utf-8')
        self._zip.write_bytes(METADATA_NAME, data, data, first=0, method=STORED)

    def close(self) -> None:
        """Write the central directory, ``metadata.json`` and ``db.sqlite3`` first, and close the file."""
        try:
            self._drain()
            self._zip.close()
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Close the file without caring about its content (the caller deletes it)."""
        self._zip.abort()
        self._cleanup()

    def _cleanup(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._spill.unlink(missing_ok=True)
        self._database.unlink(missing_ok=True)


def use_rollback_journal(path: Path) -> None:
    """Make the private database file ``path`` a rollback-journal database, never WAL.

    aiida-core opens an archive's database read-only from a temporary copy; a WAL header (bytes 18-19 of the file,
    https://www.sqlite.org/fileformat.html#file_format_version_numbers) would make that need a ``-shm`` file and a
    writable folder, and made our own import fail with ``database is locked``. Archives written by older sqlitedos
    versions have that header; it is reset here on the private copy.
    """
    try:
        connect(path, foreign_keys=False, journal_mode='DELETE').close()
    except (sqlite3.DatabaseError, AiidaException) as exc:
        raise CorruptStorage(f'the archive {DATABASE_NAME} is not a SQLite database: {exc}') from exc


def open_database_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to an archive database, without foreign keys (it may be any aiida variant)."""
    return connect(path, read_only=True, foreign_keys=False)
