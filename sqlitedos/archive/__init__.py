"""aiida's ``.aiida`` archives: ``create_archive`` writes one, ``import_archive`` adds one to a storage.

Both stream: rows move inside SQLite in bulk and files in batches of streams, so memory does not grow with the
archive. ``SqliteZipBackend`` (``sqlitedos.storage.sqlite_zip``) reads an archive in place, without importing it.
"""

from __future__ import annotations

from sqlitedos.archive.export import create_archive
from sqlitedos.archive.format import ARCHIVE_VERSION, ArchiveReader
from sqlitedos.archive.import_ import MERGE_EXTRAS_MODES, import_archive

__all__ = ('ARCHIVE_VERSION', 'MERGE_EXTRAS_MODES', 'ArchiveReader', 'create_archive', 'import_archive')
