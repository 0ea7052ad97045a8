"""``SqliteZipBackend``: a read-only storage over an ``.aiida`` archive (a zip file or its unpacked folder).

Queries run on the archive's ``db.sqlite3`` (extracted from a zip to a temporary file on first use, deleted on
close; used in place for a folder) and node files are read from the ``repo/<key>`` members, without importing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from sqlitedos.db import Session, connect
from sqlitedos.exceptions import ReadOnlyError
from sqlitedos.profile import Profile, ZipStorageModel
from sqlitedos.repository.abstract import AbstractRepositoryBackend, ObjectNotFoundError, VerifyingReader, check_key
from sqlitedos.storage.base import StorageBackend

__all__ = ('SqliteZipBackend', 'ZipfileBackendRepository')

#: The archive version this storage reads (aiida's ``SqliteZipBackend.version_head()``).
ZIP_VERSION = 'main_0001'


def _read_only(what: str) -> ReadOnlyError:
    return ReadOnlyError(f'cannot {what}: an archive storage is read-only; import the archive into a storage first')


class ZipfileBackendRepository(AbstractRepositoryBackend):
    """The read-only repository of an archive: objects are the ``repo/<sha256>`` members (or files)."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._lock = threading.Lock()

    @property
    def uuid(self) -> None:
        return None

    @property
    def key_format(self) -> str:
        return 'sha256'

    def initialise(self, **kwargs: Any) -> None:
        raise _read_only('initialise a repository')

    @property
    def is_initialised(self) -> bool:
        return True

    def erase(self) -> None:
        raise _read_only('erase the repository')

    def _put_object_from_filelike(self, handle: BinaryIO) -> str:
        raise _read_only('store a file')

    def has_objects(self, keys: list[str]) -> list[bool]:
        return [isinstance(key, str) and self._reader.has_object(key) for key in keys]

    def list_objects(self) -> Iterable[str]:
        return self._reader.object_keys()

    def get_info(self, detailed: bool = False) -> dict[str, Any]:
        return {'objects': {'count': sum(1 for _ in self.list_objects())}}

    def maintain(self, dry_run: bool = False, live: bool = True, **kwargs: Any) -> None:
        raise NotImplementedError('an archive repository cannot be maintained')

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        if not self._reader.has_object(check_key(key)):
            raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
        with self._lock, self._reader.open_object(key) as handle:
            yield VerifyingReader(handle, key)  # type: ignore[misc]

    def iter_object_streams(self, keys: Iterable[str]) -> Iterator[tuple[str, BinaryIO]]:
        for key in keys:
            with self.open(key) as handle:
                yield key, handle

    def get_object_hash(self, key: str) -> str:
        """The key itself: archive keys are sha256 digests."""
        if not self._reader.has_object(check_key(key)):
            raise ObjectNotFoundError(f'object with key `{key}` does not exist.')
        return key

    def _delete_objects(self, keys: list[str]) -> None:
        raise _read_only('delete files')


class SqliteZipBackend(StorageBackend):
    """Read-only storage over an archive; ``IncompatibleStorageSchema`` unless it is at ``main_0001``."""

    Model = ZipStorageModel
    read_only: ClassVar[bool] = True
    cli_exposed = False

    @staticmethod
    def create_profile(filepath: str | os.PathLike[str], options: dict[str, Any] | None = None) -> Profile:
        """A profile for the archive at ``filepath`` (made absolute)."""
        return Profile(
            'default',
            {
                'storage': {'backend': 'core.sqlite_zip', 'config': {'filepath': str(Path(filepath).absolute())}},
                'process_control': {'backend': None, 'config': {}},
                'options': options or {},
            },
        )

    @classmethod
    def version_head(cls) -> str:
        return ZIP_VERSION

    @classmethod
    def version_profile(cls, profile: Profile) -> str | None:
        """The archive's ``export_version`` (read from ``metadata.json`` only)."""
        from sqlitedos.archive.format import ArchiveReader

        filepath = ZipStorageModel(profile.storage_config['filepath']).filepath
        with ArchiveReader(filepath, check_version=False) as reader:
            return reader.metadata['export_version']

    @classmethod
    def initialise(cls, profile: Profile, reset: bool = False) -> bool:
        raise _read_only('initialise an archive storage')

    @classmethod
    def migrate(cls, profile: Profile) -> None:
        raise NotImplementedError('migrate an archive with `verdi archive migrate` (aiida-core)')

    def __init__(self, profile: Profile) -> None:
        from sqlitedos.archive.format import ArchiveReader

        super().__init__(profile)
        self._path = Path(ZipStorageModel(profile.storage_config['filepath']).filepath)
        self._reader = ArchiveReader(self._path)
        self._workdir: str | None = None
        self._database: Path | None = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def __str__(self) -> str:
        return f'SqliteZip storage (read-only) [{"closed" if self.is_closed else "open"}] @ {self._path}'

    @property
    def metadata(self) -> dict[str, Any]:
        """The archive's ``metadata.json``."""
        return dict(self._reader.metadata)

    def _database_path(self) -> Path:
        with self._lock:
            if self._database is None:
                folder_database = self._reader.database_path()
                if folder_database is not None:
                    self._database = folder_database
                else:
                    self._workdir = tempfile.mkdtemp(prefix='sqlitedos-zip-')
                    self._database = self._reader.extract_database(Path(self._workdir) / 'db.sqlite3')
            return self._database

    def _thread_session(self) -> Session:
        session = getattr(self._local, 'session', None)
        if session is None:
            connection = connect(self._database_path(), read_only=True)
            session = self._register(Session(connection, file_backed=False, read_only=True))
            self._local.session = session
        return session

    def get_repository(self) -> ZipfileBackendRepository:
        """The archive's files, read-only."""
        return ZipfileBackendRepository(self._reader)

    def close(self) -> None:
        """Close connections and the archive, and delete the extracted database."""
        super().close()
        self._reader.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # --- writes are refused --------------------------------------------------------------------------------------

    def bulk_insert(self, entity_type: Any, rows: Sequence[Any], allow_defaults: bool = False) -> list[int]:
        raise _read_only('insert rows')

    def bulk_update(self, entity_type: Any, rows: Sequence[Any]) -> None:
        raise _read_only('update rows')

    def delete_nodes_and_connections(self, pks_to_delete: Sequence[int]) -> None:
        raise _read_only('delete nodes')

    def set_global_variable(self, key: str, value: Any, description: str | None = None, overwrite: bool = True) -> None:
        raise _read_only('set a global variable')

    def get_global_variable(self, key: str) -> Any:
        raise NotImplementedError('an archive storage has no global variables')

    def maintain(self, full: bool = False, dry_run: bool = False, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError('an archive storage cannot be maintained')

    def delete(self) -> None:
        raise _read_only('delete the archive')

    def _clear(self) -> None:
        raise _read_only('clear the storage')
