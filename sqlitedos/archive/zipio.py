"""Reading zip files in memory that does not grow with the number of members.

``zipfile.ZipFile`` keeps a ``ZipInfo`` per member (about 800 bytes each: 20 MB for 25,000 files). Here the
central directory is parsed as a stream and its entries go into a small SQLite table in a temporary file; a member
is then read with positioned reads (``os.pread``) of its local header and data, decompressed in chunks and checked
against its CRC-32 and size. Format: https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT (4.3.12-4.3.16).
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from sqlitedos.db import Session, connect
from sqlitedos.exceptions import CorruptStorage

__all__ = ('Member', 'ZipIndex')

EOCD = struct.Struct('<4s4H2LH')  # end of central directory record
EOCD_SIGNATURE = b'PK\x05\x06'
ZIP64_LOCATOR = struct.Struct('<4sLQL')
ZIP64_LOCATOR_SIGNATURE = b'PK\x06\x07'
ZIP64_EOCD = struct.Struct('<4sQ2H2L4Q')
ZIP64_EOCD_SIGNATURE = b'PK\x06\x06'
CENTRAL = struct.Struct('<4s4B4HL2L5H2L')  # central directory file header
CENTRAL_SIGNATURE = b'PK\x01\x02'
LOCAL = struct.Struct('<4s2B4HL2L2H')  # local file header
LOCAL_SIGNATURE = b'PK\x03\x04'
ZIP64_EXTRA_ID = 0x0001
#: The EOCD record is at most 22 bytes plus a 65,535-byte comment from the end of the file.
EOCD_SEARCH = EOCD.size + 0xFFFF
STORED, DEFLATED = 0, 8
#: Members up to this compressed size are read and decompressed in one step.
SMALL_MEMBER = 1024 * 1024
READ_CHUNK = 1024 * 1024
#: Compressed bytes read at a time from a large member (inflated at most ``READ_CHUNK`` at a time).
RAW_CHUNK = 64 * 1024
ENTRY_BATCH = 2000
#: A member whose content is more than this many times its compressed size is refused, upfront from the sizes the
#: central directory declares and again while it is inflated. Deflate's ceiling is about 1032:1 (a zip bomb); real
#: archive members stay far below (aiida's database and text files inflate 3-20 times, binary data less).
MAX_COMPRESSION_RATIO = 200
#: Members inflating to at most this many bytes are never refused for their ratio (a small file of zeros is fine).
RATIO_FREE_BYTES = 64 * 1024 * 1024

CREATE_MEMBERS = """
CREATE TABLE member (
    position INTEGER PRIMARY KEY, name TEXT NOT NULL, method INTEGER NOT NULL, flags INTEGER NOT NULL,
    crc INTEGER NOT NULL, compressed INTEGER NOT NULL, size INTEGER NOT NULL, offset INTEGER NOT NULL
)
"""
CREATE_MEMBER_INDEX = 'CREATE INDEX member_name ON member (name)'
INSERT_MEMBER = 'INSERT INTO member VALUES (?, ?, ?, ?, ?, ?, ?, ?)'
SELECT_BOMB = """
SELECT name, method, flags, crc, compressed, size, offset FROM member
WHERE method = ? AND size > ? AND size > ? * max(compressed, 1) ORDER BY position LIMIT 1
"""
SELECT_MEMBER = 'SELECT name, method, flags, crc, compressed, size, offset FROM member WHERE name = ? LIMIT 1'


class Member(NamedTuple):
    """One member of the central directory."""

    name: str
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    offset: int


def _corrupt(path: Path, what: str) -> CorruptStorage:
    return CorruptStorage(f'{str(path)!r} is not a readable .aiida archive (zip file): {what}')


class ZipIndex:
    """The members of a zip file, indexed in a SQLite file at ``index_path``; members open as binary streams."""

    def __init__(self, path: Path, index_path: Path) -> None:
        self.path = path
        self.index_path = index_path
        self._handle = open(path, 'rb')
        self._lock = threading.Lock()
        try:
            # A private scratch file: no journal, no fsync, and one lock held throughout (halves a lookup's cost).
            self._index = connect(
                index_path, create=True, journal_mode='OFF', synchronous='OFF', locking_mode='EXCLUSIVE'
            )
        except BaseException:
            self._handle.close()
            raise
        try:
            with Session(self._index, file_backed=False).transaction() as connection:
                connection.execute(CREATE_MEMBERS)
                self._load()
                connection.execute(CREATE_MEMBER_INDEX)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the zip file and the index (idempotent)."""
        self._handle.close()
        self._index.close()

    # --- the central directory ----------------------------------------------------------------------------------

    def _pread(self, size: int, offset: int) -> bytes:
        if hasattr(os, 'pread'):
            return os.pread(self._handle.fileno(), size, offset)
        with self._lock:  # pragma: no cover - Windows
            self._handle.seek(offset)
            return self._handle.read(size)

    def _directory_location(self) -> tuple[int, int]:
        """``(offset, count)`` of the central directory, from the (zip64) end records."""
        file_size = os.fstat(self._handle.fileno()).st_size
        start = max(0, file_size - EOCD_SEARCH)
        tail = self._pread(file_size - start, start)
        position = tail.rfind(EOCD_SIGNATURE)
        if position < 0 or len(tail) - position < EOCD.size:
            raise _corrupt(self.path, 'it has no end of central directory record (not a zip, or truncated)')
        _, _, _, _, count, _, offset, _ = EOCD.unpack_from(tail, position)
        locator_at = position - ZIP64_LOCATOR.size
        if locator_at >= 0 and tail[locator_at : locator_at + 4] == ZIP64_LOCATOR_SIGNATURE:
            _, _, record_offset, _ = ZIP64_LOCATOR.unpack_from(tail, locator_at)
            record = self._pread(ZIP64_EOCD.size, record_offset)
            if len(record) < ZIP64_EOCD.size or record[:4] != ZIP64_EOCD_SIGNATURE:
                raise _corrupt(self.path, 'its zip64 end of central directory record is damaged')
            fields = ZIP64_EOCD.unpack(record)
            count, offset = fields[7], fields[9]
        if offset >= file_size:
            raise _corrupt(self.path, 'its central directory lies beyond the end of the file (truncated)')
        return offset, count

    def _entries(self) -> Iterator[Member]:
        offset, count = self._directory_location()
        stream = self._handle
        stream.seek(offset)
        for _ in range(count):
            header = stream.read(CENTRAL.size)
            if len(header) < CENTRAL.size or header[:4] != CENTRAL_SIGNATURE:
                raise _corrupt(self.path, 'its central directory is damaged')
            fields = CENTRAL.unpack(header)
            flags, method, crc, compressed, size = fields[5], fields[6], fields[9], fields[10], fields[11]
            name_length, extra_length, comment_length, local_offset = fields[12], fields[13], fields[14], fields[18]
            raw_name = stream.read(name_length)
            extra = stream.read(extra_length)
            stream.read(comment_length)
            name = raw_name.decode('utf-8' if flags & 0x800 else 'cp437')
            size, compressed, local_offset = _zip64_values(extra, size, compressed, local_offset)
            yield Member(name, method, flags, crc, compressed, size, local_offset)

    def _load(self) -> None:
        batch = []
        for position, member in enumerate(self._entries()):
            batch.append((position, *member))
            if len(batch) == ENTRY_BATCH:
                self._index.executemany(INSERT_MEMBER, batch)
                batch = []
        self._index.executemany(INSERT_MEMBER, batch)

    def names(self) -> Iterator[tuple[int, str]]:
        """``(position, name)`` of every member, in central directory order."""
        cursor = self._index.execute('SELECT position, name FROM member ORDER BY position')
        while True:
            rows = cursor.fetchmany(ENTRY_BATCH)
            if not rows:
                return
            yield from rows

    # --- members ---------------------------------------------------------------------------------------------------

    def first_bomb(self) -> Member | None:
        """The first member whose declared sizes pass ``MAX_COMPRESSION_RATIO`` (checked before anything is read)."""
        row = self._index.execute(SELECT_BOMB, (DEFLATED, RATIO_FREE_BYTES, MAX_COMPRESSION_RATIO)).fetchone()
        return None if row is None else Member(*row)

    def check_ratios(self) -> None:
        """``CorruptStorage`` if any member is declared to inflate past ``MAX_COMPRESSION_RATIO``."""
        member = self.first_bomb()
        if member is not None:
            _check_ratio(self.path, member, member.size, member.compressed)

    def first_missing(self, database: Path, table: str, prefix: str) -> str | None:
        """The first ``key`` of ``table`` in the SQLite file ``database`` without a member ``prefix + key``."""
        self._index.execute('ATTACH DATABASE ? AS keys', (str(database),))
        try:
            row = self._index.execute(
                f'SELECT key FROM keys.{table} WHERE ? || key NOT IN (SELECT name FROM member) LIMIT 1', (prefix,)
            ).fetchone()
        finally:
            self._index.execute('DETACH DATABASE keys')
        return None if row is None else row[0]

    def find(self, name: str) -> Member | None:
        """The member called ``name``, or None."""
        row = self._index.execute(SELECT_MEMBER, (name,)).fetchone()
        return None if row is None else Member(*row)

    def open(self, member: Member) -> io.RawIOBase:
        """A binary stream of the member's content; damage found while reading raises ``CorruptStorage``."""
        if member.flags & 0x1:
            raise _corrupt(self.path, f'the member {member.name!r} is encrypted')
        if member.method not in (STORED, DEFLATED):
            raise _corrupt(self.path, f'the member {member.name!r} uses unsupported compression {member.method}')
        header = self._pread(LOCAL.size, member.offset)
        if len(header) < LOCAL.size or header[:4] != LOCAL_SIGNATURE:
            raise _corrupt(self.path, f'the local header of {member.name!r} is damaged')
        fields = LOCAL.unpack(header)
        start = member.offset + LOCAL.size + fields[10] + fields[11]
        _check_ratio(self.path, member, member.size, member.compressed)
        if member.compressed <= SMALL_MEMBER and member.size <= SMALL_MEMBER:
            raw = self._pread(member.compressed, start)
            data = _inflate_all(raw, member, self.path)
            return io.BytesIO(data)  # type: ignore[return-value]
        return _MemberStream(self, member, start)


def _zip64_values(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Apply the zip64 extra field: it holds, in order, those of the three values that are 0xFFFFFFFF."""
    position = 0
    while position + 4 <= len(extra):
        header_id, length = struct.unpack_from('<2H', extra, position)
        if header_id == ZIP64_EXTRA_ID:
            values = iter(struct.unpack_from(f'<{length // 8}Q', extra, position + 4))
            if size == 0xFFFFFFFF:
                size = next(values)
            if compressed == 0xFFFFFFFF:
                compressed = next(values)
            if offset == 0xFFFFFFFF:
                offset = next(values)
            break
        position += 4 + length
    return size, compressed, offset


def _check_ratio(path: Path, member: Member, size: int, compressed: int) -> None:
    """Refuse a member inflating (or declared to inflate) past ``MAX_COMPRESSION_RATIO``: a zip bomb."""
    if member.method == DEFLATED and size > RATIO_FREE_BYTES and size > MAX_COMPRESSION_RATIO * max(compressed, 1):
        raise _corrupt(
            path,
            f'the member {member.name!r} inflates {size} bytes from {compressed} compressed ones, more than '
            f'{MAX_COMPRESSION_RATIO} times: refusing it as a zip bomb (real archives stay far below)',
        )


def _oversized(path: Path, member: Member) -> CorruptStorage:
    return _corrupt(
        path, f'the member {member.name!r} holds more than the {member.size} bytes its header declares: refusing it'
    )


def _inflate_all(raw: bytes, member: Member, path: Path) -> bytes:
    if len(raw) != member.compressed:
        raise _corrupt(path, f'the member {member.name!r} is truncated')
    try:
        if member.method == STORED:
            data = raw
        else:
            # Never more than the declared size plus one byte: a member that lies about its size is refused at once.
            inflater = zlib.decompressobj(-15)
            data = inflater.decompress(raw, member.size + 1)
            if len(data) > member.size or inflater.unconsumed_tail:
                raise _oversized(path, member)
            data += inflater.flush()
    except zlib.error as exc:
        raise _corrupt(path, f'the member {member.name!r} is damaged ({exc})') from exc
    if len(data) != member.size or zlib.crc32(data) != member.crc:
        raise _corrupt(path, f'the member {member.name!r} is damaged (CRC-32 or size mismatch)')
    return data


class _MemberStream(io.RawIOBase):
    """A large member, read and inflated in chunks; the CRC-32 and size are checked at the end."""

    def __init__(self, index: ZipIndex, member: Member, start: int) -> None:
        super().__init__()
        self._index, self._member = index, member
        self._position = start
        self._remaining = member.compressed
        self._inflater: Any = zlib.decompressobj(-15) if member.method == DEFLATED else None
        self._crc = 0
        self._size = 0
        self._buffer = b''
        self._offset = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> bytes:
        """The next piece of content (at most ``READ_CHUNK`` bytes), or ``b''`` at the end."""
        while True:
            if self._inflater is not None and self._inflater.unconsumed_tail:
                raw = self._inflater.unconsumed_tail
            elif self._remaining > 0:
                raw = self._index._pread(min(RAW_CHUNK, self._remaining), self._position)
                if not raw:
                    raise _corrupt(self._index.path, f'the member {self._member.name!r} is truncated')
                self._position += len(raw)
                self._remaining -= len(raw)
            elif self._inflater is not None:
                data, self._inflater = self._inflater.flush(), None
                return data
            else:
                return b''
            if self._inflater is None:
                return raw
            try:
                data = self._inflater.decompress(raw, READ_CHUNK)
            except zlib.error as exc:
                raise _corrupt(self._index.path, f'the member {self._member.name!r} is damaged ({exc})') from exc
            if data:
                return data

    def readinto(self, buffer: Any) -> int:
        if self._offset == len(self._buffer):
            self._buffer, self._offset = self._fill(), 0
            self._crc = zlib.crc32(self._buffer, self._crc)
            self._size += len(self._buffer)
            # Output never passes the declared size, and the declared size passed the ratio check when the archive
            # was opened: so no member inflates past MAX_COMPRESSION_RATIO of its compressed size, whatever it holds.
            # (A ratio of the bytes consumed so far would refuse honest files that start with a long run of zeros.)
            if self._size > self._member.size:
                raise _oversized(self._index.path, self._member)
            if not self._buffer and (self._size != self._member.size or self._crc != self._member.crc):
                raise _corrupt(self._index.path, f'the member {self._member.name!r} is damaged (CRC-32 or size)')
        count = min(len(buffer), len(self._buffer) - self._offset)
        buffer[:count] = memoryview(self._buffer)[self._offset : self._offset + count]
        self._offset += count
        return count


# --- writing ------------------------------------------------------------------------------------------------------

ZIP64_LIMIT = 0xFFFFFFFF
ZIP64_COUNT_LIMIT = 0xFFFF
DATA_DESCRIPTOR_FLAG = 0x08
ZIP64_EXTRA = struct.Struct('<2H2Q')  # id, length, size, compressed size (the local header form)


def _raw_deflate(data: bytes, level: int) -> bytes:
    """Raw deflate (no zlib header) of ``data``: ``zlib.compress(data, level, wbits)`` needs Python 3.11."""
    deflater = zlib.compressobj(level, zlib.DEFLATED, -15)
    return deflater.compress(data) + deflater.flush()


def _dos_time(date_time: tuple[int, ...]) -> tuple[int, int]:
    year, month, day, hour, minute, second = date_time[:6]
    return (hour << 11) | (minute << 5) | (second // 2), ((year - 1980) << 9) | (month << 5) | day


class ZipStreamWriter:
    """Writes a zip file member by member, keeping only the central directory entries of
    the members listed first (``first=<position>``) in memory.

    The central directory entries of the other members go to a side file (``spill_path``) as they are written and
    are copied after the first ones on ``close()``: memory does not grow with the number of members. Members may be
    written from bytes (``write_bytes``, one-shot compression, which may run in another thread) or from a stream of
    unknown size (``write_stream``: ZIP64 local header, sizes patched in afterwards, as ``zipfile`` does).
    """

    def __init__(self, path: Path, spill_path: Path, compression: int, date_time: tuple[int, ...]) -> None:
        self.compression = compression
        self.method = DEFLATED if compression else STORED
        self._handle = open(path, 'wb')
        self._spill = open(spill_path, 'w+b')
        self._first: list[tuple[int, bytes]] = []
        self._count = 0
        self._time, self._date = _dos_time(date_time)

    def compress(self, data: bytes) -> bytes:
        """The member data as it is stored (raw deflate at the writer's level, or as is); thread-safe."""
        return _raw_deflate(data, self.compression) if self.method == DEFLATED else data

    def write_bytes(
        self,
        name: str,
        data: bytes,
        stored_data: bytes | None = None,
        *,
        first: int | None = None,
        method: int | None = None,
    ) -> None:
        """Add a member whose content is ``data``; ``stored_data`` is ``compress(data)`` if already computed."""
        method = self.method if method is None else method
        if stored_data is None:
            stored_data = _raw_deflate(data, self.compression) if method == DEFLATED else data
        crc = zlib.crc32(data)
        offset = self._handle.tell()
        encoded = name.encode('utf-8')
        zip64 = len(data) >= ZIP64_LIMIT or len(stored_data) >= ZIP64_LIMIT
        extra = ZIP64_EXTRA.pack(ZIP64_EXTRA_ID, 16, len(data), len(stored_data)) if zip64 else b''
        sizes = (ZIP64_LIMIT, ZIP64_LIMIT) if zip64 else (len(stored_data), len(data))
        self._handle.write(
            LOCAL.pack(
                LOCAL_SIGNATURE,
                45 if zip64 else 20,
                0,
                0,
                method,
                self._time,
                self._date,
                crc,
                *sizes,
                len(encoded),
                len(extra),
            )
            + encoded
            + extra
        )
        self._handle.write(stored_data)
        self._add_central(encoded, method, 0, crc, len(stored_data), len(data), offset, first)

    def compress_stream(self, stream: Any, target: Any) -> tuple[int, int, int]:
        """Write the stored form of a stream's content to ``target`` in chunks; ``(crc, size, stored size)``.

        Thread-safe: used to compress the database on a worker thread while objects are written.
        """
        deflater = zlib.compressobj(self.compression, zlib.DEFLATED, -15) if self.method == DEFLATED else None
        crc = size = stored = 0
        while True:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                break
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            out = deflater.compress(chunk) if deflater is not None else chunk
            target.write(out)
            stored += len(out)
        if deflater is not None:
            out = deflater.flush()
            target.write(out)
            stored += len(out)
        return crc, size, stored

    def _local_header_zip64(self, encoded: bytes, crc: int, size: int, stored: int) -> bytes:
        return (
            LOCAL.pack(
                LOCAL_SIGNATURE,
                45,
                0,
                0,
                self.method,
                self._time,
                self._date,
                crc,
                ZIP64_LIMIT,
                ZIP64_LIMIT,
                len(encoded),
                ZIP64_EXTRA.size,
            )
            + encoded
            + ZIP64_EXTRA.pack(ZIP64_EXTRA_ID, 16, size, stored)
        )

    def write_stream(self, name: str, stream: Any, *, first: int | None = None) -> None:
        """Add a member from a binary stream of any size, compressed in chunks (ZIP64 local header, patched)."""
        encoded = name.encode('utf-8')
        offset = self._handle.tell()
        self._handle.write(b'\0' * (LOCAL.size + len(encoded) + ZIP64_EXTRA.size))
        crc, size, stored = self.compress_stream(stream, self._handle)
        end = self._handle.tell()
        self._handle.seek(offset)
        self._handle.write(self._local_header_zip64(encoded, crc, size, stored))
        self._handle.seek(end)
        self._add_central(encoded, self.method, 0, crc, stored, size, offset, first)

    def write_compressed(
        self, name: str, stored_stream: Any, crc: int, size: int, stored: int, *, first: int | None = None
    ) -> None:
        """Add a member whose stored form (from ``compress_stream``) is read from ``stored_stream``."""
        encoded = name.encode('utf-8')
        offset = self._handle.tell()
        self._handle.write(self._local_header_zip64(encoded, crc, size, stored))
        while True:
            chunk = stored_stream.read(READ_CHUNK)
            if not chunk:
                break
            self._handle.write(chunk)
        self._add_central(encoded, self.method, 0, crc, stored, size, offset, first)

    def _add_central(
        self, encoded: bytes, method: int, flags: int, crc: int, stored: int, size: int, offset: int, first: int | None
    ) -> None:
        values = [size, stored, offset]
        extra_values = [value for value in values if value >= ZIP64_LIMIT]
        extra = b''
        if extra_values:
            extra = struct.pack(f'<2H{len(extra_values)}Q', ZIP64_EXTRA_ID, 8 * len(extra_values), *extra_values)
        size, stored, offset = (min(value, ZIP64_LIMIT) for value in values)
        version = 45 if extra else 20
        entry = (
            CENTRAL.pack(
                CENTRAL_SIGNATURE,
                version,
                3,
                version,
                0,
                flags,
                method,
                self._time,
                self._date,
                crc,
                stored,
                size,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,
                offset,
            )
            + encoded
            + extra
        )
        self._count += 1
        if first is not None:
            self._first.append((first, entry))
        else:
            self._spill.write(entry)

    def close(self) -> None:
        """Write the central directory (first members first) and the end records, and close the file."""
        start = self._handle.tell()
        for _, entry in sorted(self._first):
            self._handle.write(entry)
        self._spill.seek(0)
        while True:
            chunk = self._spill.read(READ_CHUNK)
            if not chunk:
                break
            self._handle.write(chunk)
        end = self._handle.tell()
        size, count = end - start, self._count
        if count >= ZIP64_COUNT_LIMIT or start >= ZIP64_LIMIT or size >= ZIP64_LIMIT:
            self._handle.write(
                ZIP64_EOCD.pack(ZIP64_EOCD_SIGNATURE, ZIP64_EOCD.size - 12, 45, 45, 0, 0, count, count, size, start)
            )
            self._handle.write(ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIGNATURE, 0, end, 1))
        self._handle.write(
            EOCD.pack(
                EOCD_SIGNATURE,
                0,
                0,
                min(count, ZIP64_COUNT_LIMIT),
                min(count, ZIP64_COUNT_LIMIT),
                min(size, ZIP64_LIMIT),
                min(start, ZIP64_LIMIT),
                0,
            )
        )
        # On disk before the caller renames it into place: a crash never leaves a truncated archive under its name.
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.abort()

    def abort(self) -> None:
        """Close the files (idempotent)."""
        self._handle.close()
        self._spill.close()
