"""Comments on nodes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlitedos.db import encode_datetime, now, translate_errors
from sqlitedos.entities.base import BackendCollection, BackendEntity, column, new_row_uuid

if TYPE_CHECKING:
    from sqlitedos.entities.nodes import BackendNode
    from sqlitedos.entities.users import BackendUser
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendComment', 'BackendCommentCollection')

UPDATE_MTIME = 'UPDATE db_dbcomment SET mtime = ? WHERE id = ?'


class BackendComment(BackendEntity):
    """A row of ``db_dbcomment``; ``mtime`` is refreshed on every update."""

    TABLE_NAME = 'db_dbcomment'
    ORM_BASE = 'comment'
    MTIME_COLUMN = 'mtime'

    def __init__(
        self,
        backend: StorageBackend,
        node: BackendNode,
        user: BackendUser,
        content: str | None = None,
        ctime: dt.datetime | None = None,
        mtime: dt.datetime | None = None,
        uuid: str | None = None,
    ) -> None:
        super().__init__(backend, {})
        self._row.update(
            uuid=uuid or new_row_uuid(),
            dbnode_id=self._require_stored(node, 'the node'),
            ctime=ctime,
            mtime=mtime,
            user_id=self._require_stored(user, 'the user'),
            content=content or '',
        )

    def _fill_defaults(self) -> None:
        if self._row['ctime'] is None:
            self._row['ctime'] = now()
        if self._row['mtime'] is None:
            self._row['mtime'] = now()

    uuid = column('uuid')
    ctime = column('ctime')
    mtime = column('mtime')

    def set_mtime(self, value: dt.datetime) -> None:
        """Set the modification time (written without a further refresh)."""
        self._row['mtime'] = value
        if self.is_stored:
            with self._backend.transaction() as connection, translate_errors():
                connection.execute(UPDATE_MTIME, (encode_datetime(value), self._id))

    @property
    def node(self) -> BackendNode:
        return self._backend.nodes.get(self._row['dbnode_id'])

    @property
    def user(self) -> BackendUser:
        return self._backend.users.get(self._row['user_id'])

    def set_user(self, value: BackendUser) -> None:
        self._set_field('user_id', self._require_stored(value, 'the user'))

    content = column('content')

    def set_content(self, value: str) -> None:
        self._set_field('content', value)


class BackendCommentCollection(BackendCollection[BackendComment]):
    """The comments of a storage."""

    ENTITY_CLASS = BackendComment

    def create(self, node: BackendNode, user: BackendUser, content: str | None = None, **kwargs: Any) -> BackendComment:
        """A new, unstored comment on a stored node."""
        return BackendComment(self._backend, node, user, content, **kwargs)
