"""What every storage backend shares: sessions, transactions, global variables, closing."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Any, ClassVar, Iterator

from sqlitedos.db import Session, encode_datetime, encode_json, decode_json, now, translate_errors
from sqlitedos.exceptions import ClosedStorage, NotExistentKeyError
from sqlitedos.profile import Profile

__all__ = ('StorageBackend',)

SELECT_SETTING = 'SELECT id, val FROM db_dbsetting WHERE "key" = ?'
UPDATE_SETTING = 'UPDATE db_dbsetting SET val = ?, time = ? WHERE id = ?'
INSERT_SETTING = 'INSERT INTO db_dbsetting ("key", val, description, time) VALUES (?, ?, ?, ?)'
SELECT_USER_BY_EMAIL = 'SELECT id FROM db_dbuser WHERE email = ?'
INSERT_USER = 'INSERT INTO db_dbuser (email, first_name, last_name, institution) VALUES (?, ?, ?, ?)'


def ensure_user(connection: sqlite3.Connection, email: str) -> int:
    """The id of the user with ``email``, inserting it (empty names) if absent; inside the caller's transaction."""
    row = connection.execute(SELECT_USER_BY_EMAIL, (email,)).fetchone()
    if row is not None:
        return row[0]
    return connection.execute(INSERT_USER + ' RETURNING id', (email, '', '', '')).fetchone()[0]


class StorageBackend:
    """Base class of the storage backends: a profile, per-thread sessions and the transaction API."""

    read_only: ClassVar[bool] = False

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._closed = False
        self._sessions: list[Session] = []
        self._sessions_lock = threading.Lock()

    # --- lifecycle --------------------------------------------------------------------------------------------

    @property
    def profile(self) -> Profile:
        return self._profile

    def version(self) -> str | None:
        """The schema version of this storage."""
        return self.version_profile(self._profile)

    @classmethod
    def version_profile(cls, profile: Profile) -> str | None:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release every connection; idempotent. A closed storage object is never reopened."""
        if self._closed:
            return
        self._closed = True
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> StorageBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- sessions and transactions ------------------------------------------------------------------------------

    def _new_session(self) -> Session:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _session(self) -> Session:
        """The session of the calling thread; ``ClosedStorage`` once the storage is closed."""
        if self._closed:
            raise ClosedStorage(f'{self} is closed: open a new storage object to go on')
        return self._thread_session()

    def _thread_session(self) -> Session:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _register(self, session: Session) -> Session:
        with self._sessions_lock:
            self._sessions.append(session)
        return session

    def get_session(self) -> sqlite3.Connection:
        """The calling thread's ``sqlite3`` connection (aiida returns its SQLAlchemy session here)."""
        return self._session().connection

    def query(self) -> Any:
        """The backend query builder: runs query dicts (``count``, ``first``, ``iterall``, ``iterdict``, ...)."""
        from sqlitedos.query.backend import QueryBackend

        return QueryBackend(self)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing block; nested blocks are savepoints. Outside it, every write commits at once."""
        with self._session().transaction() as connection:
            yield connection

    @property
    def in_transaction(self) -> bool:
        return not self._closed and self._thread_session().in_transaction

    # --- global variables ---------------------------------------------------------------------------------------

    def set_global_variable(self, key: str, value: Any, description: str | None = None, overwrite: bool = True) -> None:
        """Set a global variable (a row of ``db_dbsetting``); ``ValueError`` if it exists and not ``overwrite``."""
        encoded = encode_json(value)
        with self.transaction() as connection:
            row = connection.execute(SELECT_SETTING, (key,)).fetchone()
            if row is not None and not overwrite:
                raise ValueError(f'The setting {key} already exists')
            if row is not None:
                connection.execute(UPDATE_SETTING, (encoded, encode_datetime(now()), row[0]))
            else:
                connection.execute(INSERT_SETTING, (key, encoded, description or '', encode_datetime(now())))

    def get_global_variable(self, key: str) -> Any:
        """The value of a global variable; ``NotExistentKeyError`` (a ``KeyError``) if it is not set."""
        with translate_errors():
            row = self.get_session().execute(SELECT_SETTING, (key,)).fetchone()
        if row is None:
            raise NotExistentKeyError(f'No setting found with key {key}')
        return decode_json(row[1])
