"""Log records attached to nodes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlitedos.db import now
from sqlitedos.entities.base import BackendCollection, BackendEntity, clean_value, column, new_row_uuid, require_stored

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendLog', 'BackendLogCollection')


class BackendLog(BackendEntity):
    """A row of ``db_dblog``."""

    TABLE_NAME = 'db_dblog'
    ORM_BASE = 'log'

    def __init__(
        self,
        backend: StorageBackend,
        time: dt.datetime | None,
        loggername: str,
        levelname: str,
        dbnode_id: int,
        message: str = '',
        metadata: dict[str, Any] | None = None,
        uuid: str | None = None,
    ) -> None:
        if not isinstance(dbnode_id, int) or isinstance(dbnode_id, bool):
            dbnode_id = require_stored(backend, dbnode_id, 'the node')
        super().__init__(
            backend,
            {
                'uuid': uuid or new_row_uuid(),
                'time': time,
                'loggername': loggername,
                'levelname': levelname,
                'dbnode_id': dbnode_id,
                'message': message,
                'metadata': clean_value(metadata or {}),
            },
        )

    def _fill_defaults(self) -> None:
        if self._row['time'] is None:
            self._row['time'] = now()

    uuid = column('uuid')
    time = column('time')
    loggername = column('loggername')
    levelname = column('levelname')
    dbnode_id = column('dbnode_id')
    message = column('message')
    metadata = column('metadata')


class BackendLogCollection(BackendCollection[BackendLog]):
    """The log records of a storage."""

    ENTITY_CLASS = BackendLog
