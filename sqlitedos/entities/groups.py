"""Groups: labelled sets of nodes, with extras."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlitedos.db import encode_json, now, translate_errors
from sqlitedos.entities.base import (
    BackendCollection,
    BackendEntity,
    ExtrasMixin,
    clean_value,
    column,
    new_row_uuid,
    user_column,
)
from sqlitedos.entities.nodes import BackendNode
from sqlitedos.exceptions import IntegrityError, NotExistent, UniquenessError

if TYPE_CHECKING:
    from sqlitedos.entities.users import BackendUser
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendGroup', 'BackendGroupCollection')

COUNT_MEMBERS = 'SELECT count(*) FROM db_dbgroup_dbnodes WHERE dbgroup_id = ?'
SELECT_MEMBERS = """
SELECT node.* FROM db_dbgroup_dbnodes AS member JOIN db_dbnode AS node ON node.id = member.dbnode_id
WHERE member.dbgroup_id = ? ORDER BY node.id
"""
COUNT_EXISTING_NODES = 'SELECT count(*) FROM db_dbnode WHERE id IN (SELECT value FROM json_each(?))'
ADD_MEMBERS = """
INSERT INTO db_dbgroup_dbnodes (dbgroup_id, dbnode_id)
SELECT ?, value FROM json_each(?) WHERE true
ON CONFLICT (dbgroup_id, dbnode_id) DO NOTHING
"""
REMOVE_MEMBERS = 'DELETE FROM db_dbgroup_dbnodes WHERE dbgroup_id = ? AND dbnode_id IN (SELECT value FROM json_each(?))'
CLEAR_MEMBERS = 'DELETE FROM db_dbgroup_dbnodes WHERE dbgroup_id = ?'
CLEAR_MEMBERS_OF = 'DELETE FROM db_dbgroup_dbnodes WHERE dbgroup_id IN (SELECT value FROM json_each(?))'


class BackendGroup(ExtrasMixin, BackendEntity):
    """A row of ``db_dbgroup``; ``(label, type_string)`` is unique."""

    TABLE_NAME = 'db_dbgroup'
    ORM_BASE = 'group'

    def __init__(
        self,
        backend: StorageBackend,
        label: str,
        user: BackendUser,
        description: str = '',
        type_string: str = '',
        time: dt.datetime | None = None,
        extras: Mapping[str, Any] | None = None,
        uuid: str | None = None,
    ) -> None:
        super().__init__(backend, {})
        self._row.update(
            uuid=uuid or new_row_uuid(),
            label=label,
            type_string=type_string,
            time=time,
            description=description,
            extras=dict(extras or {}),
            user_id=self._require_stored(user, 'the user'),
        )

    def _fill_defaults(self) -> None:
        if self._row['time'] is None:
            self._row['time'] = now()
        self._row['extras'] = clean_value(self._row['extras'])

    def store(self) -> BackendGroup:
        """Insert the group; ``UniquenessError`` if its (label, type_string) is taken."""
        try:
            return super().store()
        except IntegrityError as exc:
            if 'label' in str(exc):
                raise UniquenessError(
                    f'a group of type {self.type_string!r} with the label {self.label!r} already exists'
                ) from exc
            raise

    uuid = column('uuid')

    @property
    def label(self) -> str:
        return self._row['label']

    @label.setter
    def label(self, value: str) -> None:
        previous = self._row['label']
        try:
            self._set_field('label', value)
        except IntegrityError as exc:
            self._row['label'] = previous
            raise UniquenessError(f'a group of the same type with the label {value!r} already exists') from exc

    description = column('description', writable=True)
    type_string = column('type_string')
    time = column('time')
    user = user_column()

    # --- members ----------------------------------------------------------------------------------------------

    def _stored_id(self) -> int:
        if self._id is None:
            raise NotExistent(f'{self!r} is not stored: store the group before changing its nodes')
        return self._id

    def count(self) -> int:
        """The number of nodes in the group."""
        with translate_errors():
            return self._backend.get_session().execute(COUNT_MEMBERS, (self._stored_id(),)).fetchone()[0]

    @property
    def nodes(self) -> list[BackendNode]:
        """The nodes of the group, in id order."""
        with translate_errors():
            cursor = self._backend.get_session().execute(SELECT_MEMBERS, (self._stored_id(),))
            names = [description[0] for description in cursor.description]
            rows = cursor.fetchall()
        return [BackendNode.from_row(self._backend, dict(zip(names, values))) for values in rows]

    def _node_pks(self, nodes: Iterable[BackendNode]) -> list[int]:
        pks = []
        for node in nodes:
            if not isinstance(node, BackendNode):
                raise TypeError(f'invalid type {type(node).__name__}, has to be a backend node: {node!r}')
            if not node.is_stored:
                raise ValueError('At least one of the provided nodes is unstored, stopping...')
            pks.append(self._require_stored(node, 'the node'))
        return pks

    def add_nodes(self, nodes: Iterable[BackendNode], **kwargs: Any) -> None:
        """Add stored nodes (already present ones are skipped); ``NotExistent`` if one was deleted."""
        group_id = self._stored_id()
        pks = sorted(set(self._node_pks(nodes)))
        encoded = encode_json(pks)
        with self._backend.transaction() as connection, translate_errors():
            if connection.execute(COUNT_EXISTING_NODES, (encoded,)).fetchone()[0] != len(pks):
                raise NotExistent(f'some of the nodes {pks} do not exist any more: they were deleted')
            connection.execute(ADD_MEMBERS, (group_id, encoded))

    def remove_nodes(self, nodes: Iterable[BackendNode], **kwargs: Any) -> None:
        """Remove nodes from the group (absent ones are ignored)."""
        group_id = self._stored_id()
        encoded = encode_json(self._node_pks(nodes))
        with self._backend.transaction() as connection, translate_errors():
            connection.execute(REMOVE_MEMBERS, (group_id, encoded))

    def clear(self) -> None:
        """Remove every node from the group."""
        group_id = self._stored_id()
        with self._backend.transaction() as connection, translate_errors():
            connection.execute(CLEAR_MEMBERS, (group_id,))


class BackendGroupCollection(BackendCollection[BackendGroup]):
    """The groups of a storage."""

    ENTITY_CLASS = BackendGroup

    def create(self, label: str, user: BackendUser, **kwargs: Any) -> BackendGroup:
        """A new, unstored group."""
        return BackendGroup(self._backend, label, user, **kwargs)

    def _delete_ids(self, pks: list[int], strict: bool) -> None:
        with self._backend.transaction() as connection, translate_errors():
            connection.execute(CLEAR_MEMBERS_OF, (encode_json(pks),))
            super()._delete_ids(pks, strict)
