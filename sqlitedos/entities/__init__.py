"""Backend entities and collections: users, computers, authinfos, nodes, groups, comments, logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlitedos.entities.authinfos import BackendAuthInfo, BackendAuthInfoCollection
from sqlitedos.entities.base import BackendCollection, BackendEntity, clean_value, validate_attribute_extra_key
from sqlitedos.entities.comments import BackendComment, BackendCommentCollection
from sqlitedos.entities.computers import BackendComputer, BackendComputerCollection
from sqlitedos.entities.groups import BackendGroup, BackendGroupCollection
from sqlitedos.entities.logs import BackendLog, BackendLogCollection
from sqlitedos.entities.nodes import BackendNode, BackendNodeCollection, LinkTriple
from sqlitedos.entities.users import BackendUser, BackendUserCollection
from sqlitedos.exceptions import InputValidationError

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = (
    'ENTITY_CLASSES',
    'BackendAuthInfo',
    'BackendAuthInfoCollection',
    'BackendCollection',
    'BackendComment',
    'BackendCommentCollection',
    'BackendComputer',
    'BackendComputerCollection',
    'BackendEntity',
    'BackendGroup',
    'BackendGroupCollection',
    'BackendLog',
    'BackendLogCollection',
    'BackendNode',
    'BackendNodeCollection',
    'BackendUser',
    'BackendUserCollection',
    'LinkTriple',
    'build_entity',
    'clean_value',
    'validate_attribute_extra_key',
)

#: orm_base -> backend entity class.
ENTITY_CLASSES: dict[str, type[BackendEntity]] = {
    cls.ORM_BASE: cls
    for cls in (BackendNode, BackendGroup, BackendUser, BackendComputer, BackendAuthInfo, BackendComment, BackendLog)
}
#: table name -> backend entity class.
TABLE_CLASSES: dict[str, type[BackendEntity]] = {cls.TABLE_NAME: cls for cls in ENTITY_CLASSES.values()}


def build_entity(storage: StorageBackend, orm_base: str, row: dict[str, Any]) -> BackendEntity:
    """A stored backend entity from a raw database row (column name -> SQL value, ``id`` included).

    :param orm_base: one of 'node', 'group', 'user', 'computer', 'authinfo', 'comment', 'log'.
    """
    try:
        cls = ENTITY_CLASSES[orm_base]
    except KeyError:
        known = sorted(ENTITY_CLASSES)
        raise InputValidationError(f'unknown orm_base {orm_base!r}; expected one of: {known}') from None
    return cls.from_row(storage, row)
