"""``SqliteTempBackend``: an in-memory storage for tests and demos, gone when closed."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from sqlitedos import migrate
from sqlitedos.db import Session, connect
from sqlitedos.profile import Profile, TempStorageModel
from sqlitedos.repository.sandbox import SandboxShaRepositoryBackend
from sqlitedos.storage.base import StorageBackend, ensure_user

__all__ = ('SqliteTempBackend',)

#: aiida reports the archive head for the temp backend (its schema is the same as the folder storage's).
TEMP_VERSION = 'main_0001'


class SqliteTempBackend(StorageBackend):
    """A storage in an in-memory SQLite database with a sandbox repository; everything is erased on close."""

    Model = TempStorageModel
    cli_exposed = False
    #: The class of the sandbox repository (the aiida plugin gives its own subclass).
    repository_class: type[SandboxShaRepositoryBackend] = SandboxShaRepositoryBackend

    @staticmethod
    def create_profile(
        name: str = 'temp',
        default_user_email: str = 'user@email.com',
        options: dict[str, Any] | None = None,
        debug: bool = False,
        filepath: str | None = None,
    ) -> Profile:
        """A profile for a temporary storage; ``filepath`` is where the sandbox goes (the system temp dir if None)."""
        return Profile(
            name,
            {
                'default_user_email': default_user_email,
                'storage': {'backend': 'core.sqlite_temp', 'config': {'filepath': filepath, 'debug': debug}},
                'process_control': {'backend': None, 'config': {}},
                'options': options or {},
            },
        )

    @classmethod
    def version_head(cls) -> str:
        return TEMP_VERSION

    @classmethod
    def version_profile(cls, profile: Profile) -> str:
        return TEMP_VERSION

    @classmethod
    def initialise(cls, profile: Profile, reset: bool = False) -> bool:
        """Nothing to initialise: the storage is created when it is opened."""
        return False

    @classmethod
    def migrate(cls, profile: Profile) -> None:
        """Nothing to migrate: the storage is always at its head."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        connection = connect(':memory:')
        self._shared_session = self._register(Session(connection, file_backed=False))
        # One in-memory connection serves every thread, so transactions take turns (a folder storage gives each
        # thread its own connection instead, and SQLite's locking does this).
        self._transaction_lock = threading.RLock()
        with self._shared_session.transaction() as conn:
            migrate.create_schema(conn, until=TEMP_VERSION, version_table=False)
            ensure_user(conn, profile.default_user_email or 'user@email.com')
        self._finalizer = weakref.finalize(self, _close_session, self._shared_session)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing block, as for every storage; threads sharing this in-memory storage take turns."""
        with self._transaction_lock, super().transaction() as connection:
            yield connection

    @property
    def in_transaction(self) -> bool:
        return super().in_transaction and self._transaction_lock._is_owned()  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return f'SqliteTemp storage [{"closed" if self.is_closed else "open"}]'

    def _thread_session(self) -> Session:
        return self._shared_session

    def close(self) -> None:
        super().close()
        self._finalizer()
        self._erase_repository()

    def delete(self) -> None:
        """Erase the sandbox repository and its files, as aiida does (the in-memory database goes with ``close()``).

        The storage stays open; a file written afterwards goes into a new, empty sandbox.
        """
        self._erase_repository()

    # --- repository and maintenance ---------------------------------------------------------------------------

    def get_repository(self) -> SandboxShaRepositoryBackend:
        """The sandbox repository in the profile's ``filepath`` (created on first write, erased on close)."""

        def create() -> SandboxShaRepositoryBackend:
            repository = self.repository_class(self.profile.storage_config.get('filepath'))
            self._repository_finalizer = weakref.finalize(self, repository.erase)
            return repository

        return self._cached_repository(create)

    def _erase_repository(self) -> None:
        self.__dict__.pop('_repository', None)
        finalizer = self.__dict__.pop('_repository_finalizer', None)
        if finalizer is not None:
            finalizer()

    def _repository_info(self, detailed: bool) -> dict[str, Any]:
        """aiida's temp storage reports no repository part in ``get_info``."""
        return {}

    def maintain(self, full: bool = False, dry_run: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Nothing to maintain in an in-memory storage: an empty report."""
        return {}


def _close_session(session: Session) -> None:
    session.close()
