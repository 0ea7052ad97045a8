"""aiida's backend entity and collection classes over sqlitedos' own: each class is both (sqlitedos' first in the
MRO, so its code runs; aiida's abstract class second, so aiida's front end accepts the object)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from aiida.common import exceptions as aiida_exceptions
from aiida.orm import implementation as aiida_impl

from sqlitedos import entities as sd
from sqlitedos import exceptions as sd_exceptions
from sqlitedos.aiida.errors import translated_errors, translating_methods
from sqlitedos.db import now, translate_errors
from sqlitedos.entities.nodes import INSERT_LINK

__all__ = (
    'ADOPTED_CLASSES',
    'SqlitedosAuthInfo',
    'SqlitedosAuthInfoCollection',
    'SqlitedosComment',
    'SqlitedosCommentCollection',
    'SqlitedosComputer',
    'SqlitedosComputerCollection',
    'SqlitedosGroup',
    'SqlitedosGroupCollection',
    'SqlitedosLog',
    'SqlitedosLogCollection',
    'SqlitedosNode',
    'SqlitedosNodeCollection',
    'SqlitedosUser',
    'SqlitedosUserCollection',
    'adopt',
)


def _backend_node(node: Any) -> Any:
    """The backend node of ``node`` (an aiida ORM node or a backend node)."""
    return getattr(node, 'backend_entity', node)


def _link_value(link_type: Any) -> str:
    """The string value of a link type (aiida's ``LinkType`` enum, sqlitedos' or a plain string)."""
    return getattr(link_type, 'value', link_type)


def _identities(backend: Any) -> weakref.WeakValueDictionary:
    identities = backend.__dict__.get('_identities')
    if identities is None:
        identities = backend.__dict__['_identities'] = weakref.WeakValueDictionary()
    return identities


def merge(entity: Any) -> Any:
    """The one live object of ``entity``'s row in its storage, refreshed with ``entity``'s (newer) row values.

    aiida's SQLAlchemy session hands out one model object per row, expired on every commit, so two ORM objects of
    one row see each other's writes; this identity map gives the plugin the same behaviour.
    """
    if entity._id is None:
        return entity
    identities = _identities(entity._backend)
    key = (entity.TABLE_NAME, entity._id)
    existing = identities.get(key)
    if existing is None or existing is entity:
        identities[key] = entity
        return entity
    existing._raw, existing._decoded = entity._raw, entity._decoded
    return existing


def _reload(entity: Any, connection: Any) -> bool:
    """Re-read ``entity``'s row (decoded on next use); False if the row is gone."""
    with translate_errors():
        cursor = connection.execute(entity._SELECT_BY_ID, (entity._id,))
        values = cursor.fetchone()
    if values is None:
        return False
    entity._raw = dict(zip([column[0] for column in cursor.description], values))
    entity._decoded = None
    return True


def reload_all(backend: Any) -> None:
    """Re-read every live entity of ``backend`` from the database (after a rollback, as SQLAlchemy expires its
    objects): values changed inside the rolled-back block are forgotten; an entity whose row is gone (its insert was
    rolled back) becomes unstored again."""
    identities = backend.__dict__.get('_identities')
    if not identities:
        return
    connection = backend.get_session()
    for key, entity in list(identities.items()):
        if not _reload(entity, connection):
            entity._id = None
            identities.pop(key, None)


def reload_rows(backend: Any, table: str, pks: Iterable[int]) -> None:
    """Re-read the live entities of rows ``pks`` of ``table`` (after a bulk update changed them underneath)."""
    identities = backend.__dict__.get('_identities')
    if not identities:
        return
    connection = backend.get_session()
    for pk in pks:
        entity = identities.get((table, pk))
        if entity is not None:
            _reload(entity, connection)


def unwrap_base_types(value: Any) -> Any:
    """``value`` with aiida's ``BaseType`` nodes (``Int``, ``Str``, ...) replaced by their values, as aiida's
    ``clean_value`` does."""
    from aiida.orm.nodes.data.base import BaseType

    if isinstance(value, BaseType):
        return value.value
    if isinstance(value, dict):
        return {key: unwrap_base_types(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [unwrap_base_types(item) for item in value]
    return value


class _Identity:
    """One object per stored row and storage (see ``merge``)."""

    @classmethod
    def from_row(cls, backend: Any, row: Any) -> Any:
        return merge(super().from_row(backend, row))  # type: ignore[misc]

    def store(self, *args: Any, **kwargs: Any) -> Any:
        with translated_errors():
            super().store(*args, **kwargs)  # type: ignore[misc]
        return merge(self)

    def _dict_set_many(self, column: str, values: Any, reset: bool = False) -> None:
        try:
            super()._dict_set_many(column, values, reset)  # type: ignore[misc]
        except sd_exceptions.ValidationError:
            # aiida also accepts its ``BaseType`` nodes as values (their value is stored): retried only then, so
            # plain values pay nothing extra.
            super()._dict_set_many(column, unwrap_base_types(values), reset)  # type: ignore[misc]


@translating_methods
class SqlitedosUser(_Identity, sd.BackendUser, aiida_impl.BackendUser):
    """A user (``db_dbuser``)."""


@translating_methods
class SqlitedosComputer(_Identity, sd.BackendComputer, aiida_impl.BackendComputer):
    """A computer (``db_dbcomputer``)."""

    def copy(self) -> SqlitedosComputer:
        """An unstored copy with a new uuid."""
        with translated_errors():
            return adopt(super().copy())


@translating_methods
class SqlitedosAuthInfo(_Identity, sd.BackendAuthInfo, aiida_impl.BackendAuthInfo):
    """The authorisation info of a user on a computer (``db_dbauthinfo``)."""


@translating_methods
class SqlitedosNode(_Identity, sd.BackendNode, aiida_impl.BackendNode):
    """A node (``db_dbnode``)."""

    def store(self, links: Iterable[tuple[Any, Any, str]] | None = None, clean: bool = True) -> SqlitedosNode:
        """Store the node with its cached incoming links (triples of source node, link type, label).

        aiida's front end has validated the links when they were cached (as for aiida's own backends, the storage
        inserts them as given): sqlitedos' own checks would also reject what aiida allows, for example two links
        cached before either target was stored.
        """
        rows = [(_backend_node(source).pk, label, _link_value(kind)) for source, kind, label in links or ()]
        with translated_errors(), self._backend.transaction() as connection:
            try:
                try:
                    super().store(None, clean=clean)
                except sd_exceptions.ValidationError:
                    if not clean:
                        raise
                    self._unwrap_base_types()
                    super().store(None, clean=clean)
                if rows:
                    with translate_errors():
                        connection.executemany(
                            INSERT_LINK, [(source, self._id, label, kind) for source, label, kind in rows]
                        )
            except BaseException:
                self._id = None
                raise
        return self

    def clean_values(self) -> None:
        """Clean attributes and extras as aiida does (its ``BaseType`` nodes become their values)."""
        with translated_errors():
            try:
                super().clean_values()
            except sd_exceptions.ValidationError:
                self._unwrap_base_types()
                super().clean_values()

    def _unwrap_base_types(self) -> None:
        row = self._row
        row['attributes'], row['extras'] = (unwrap_base_types(row[name]) for name in ('attributes', 'extras'))

    def add_incoming(self, source: Any, link_type: Any, link_label: str) -> None:
        """Add a link from the stored node ``source`` (validated by aiida's front end, as for aiida's backends)."""
        if not isinstance(source, SqlitedosNode):
            raise TypeError(f'source must be a {SqlitedosNode.__name__}, got {type(source).__name__}: {source!r}')
        if not self.is_stored:
            raise aiida_exceptions.ModificationNotAllowed('node has to be stored when adding an incoming link')
        if not source.is_stored:
            raise aiida_exceptions.ModificationNotAllowed('source node has to be stored when adding a link from it')
        with translated_errors(), self._backend.transaction() as connection, translate_errors():
            connection.execute(INSERT_LINK, (source.pk, self._id, link_label, _link_value(link_type)))

    @property
    def label(self) -> str:
        return self._row['label']

    @label.setter
    def label(self, value: str | None) -> None:
        with translated_errors():
            self._set_field('label', '' if value is None else value)

    @property
    def description(self) -> str:
        return self._row['description']

    @description.setter
    def description(self, value: str | None) -> None:
        with translated_errors():
            self._set_field('description', '' if value is None else value)

    @property
    def repository_metadata(self) -> dict[str, Any]:
        """The node's virtual file tree."""
        return self._row['repository_metadata'] or {}

    @repository_metadata.setter
    def repository_metadata(self, value: Mapping[str, Any]) -> None:
        """Set the file tree; written at once on a stored node (aiida adds files to unsealed process nodes, and its
        front end decides which nodes are still mutable)."""
        with translated_errors():
            self._set_field('repository_metadata', dict(value))

    def clone(self) -> SqlitedosNode:
        """An unstored copy (new uuid, no links)."""
        return adopt(super().clone())


@translating_methods
class SqlitedosGroup(_Identity, sd.BackendGroup, aiida_impl.BackendGroup):
    """A group (``db_dbgroup``)."""

    @property
    def nodes(self) -> list[sd.BackendNode]:
        """The nodes of the group (``SqlitedosNode`` objects), in id order."""
        with translated_errors():
            return [adopt(node) for node in sd.BackendGroup.nodes.fget(self)]  # type: ignore[attr-defined]

    def add_nodes(self, nodes: Iterable[Any], **kwargs: Any) -> None:
        """Add stored nodes (ORM or backend nodes) to the group."""
        with translated_errors():
            super().add_nodes([_backend_node(node) for node in nodes], **kwargs)

    def remove_nodes(self, nodes: Iterable[Any], **kwargs: Any) -> None:
        """Remove nodes (ORM or backend nodes) from the group."""
        with translated_errors():
            super().remove_nodes([_backend_node(node) for node in nodes], **kwargs)


@translating_methods
class SqlitedosComment(_Identity, sd.BackendComment, aiida_impl.BackendComment):
    """A comment on a node (``db_dbcomment``)."""


@translating_methods
class SqlitedosLog(_Identity, sd.BackendLog, aiida_impl.BackendLog):
    """A log record of a node (``db_dblog``)."""


#: sqlitedos entity class -> the plugin class that extends it.
ADOPTED_CLASSES: dict[type, type] = {
    sd.BackendUser: SqlitedosUser,
    sd.BackendComputer: SqlitedosComputer,
    sd.BackendAuthInfo: SqlitedosAuthInfo,
    sd.BackendNode: SqlitedosNode,
    sd.BackendGroup: SqlitedosGroup,
    sd.BackendComment: SqlitedosComment,
    sd.BackendLog: SqlitedosLog,
}


class _AiidaCollection:
    """aiida's collection semantics: ``delete_many`` takes QueryBuilder filters (``and``/``or``, operators)."""

    def delete_many(self, filters: Any) -> list[int]:
        """Delete the entities matching aiida QueryBuilder ``filters``; their pks (``ValidationError`` if empty)."""
        if not isinstance(filters, dict):
            raise TypeError('filters must be a dictionary')
        if not filters:
            raise aiida_exceptions.ValidationError('filters must not be empty')
        orm_base = self.ENTITY_CLASS.ORM_BASE  # type: ignore[attr-defined]
        query = {
            'path': [{'entity_type': orm_base, 'orm_base': orm_base, 'tag': 'entity'}],
            'filters': {'entity': filters},
            'project': {'entity': [{'id': {}}]},
        }
        pks = [pk for (pk,) in self._backend.query().iterall(query)]  # type: ignore[attr-defined]
        with translated_errors():
            self._delete_ids(pks, strict=False)  # type: ignore[attr-defined]
        return pks

    def _delete_one(self, pk: int, what: str) -> None:
        if not isinstance(pk, int) or isinstance(pk, bool):
            raise TypeError(f'the {what} id must be an int, got {pk!r}')
        if not self.delete_many({'id': pk}):
            raise aiida_exceptions.NotExistent(f"{what} with id '{pk}' not found")


def adopt(entity: Any) -> Any:
    """``entity`` as an instance of the plugin class, if it is one of sqlitedos' entity classes (no copy made).

    The plugin classes add methods only, never state, so the object is re-classed in place: a query's entities
    cost nothing extra however many rows come back.
    """
    cls = ADOPTED_CLASSES.get(type(entity))
    if cls is None:
        return entity
    entity.__class__ = cls
    return merge(entity)


@translating_methods
class SqlitedosUserCollection(sd.BackendUserCollection, aiida_impl.BackendUserCollection):
    ENTITY_CLASS = SqlitedosUser

    def create(
        self,
        email: str,
        first_name: str | None = '',
        last_name: str | None = '',
        institution: str | None = '',
        **kwargs: Any,
    ) -> SqlitedosUser:
        """A new, unstored user; names not given (None) are empty, as aiida stores them."""
        names = ['' if name is None else name for name in (first_name, last_name, institution)]
        with translated_errors():
            return SqlitedosUser(self._backend, email, *names, **kwargs)


@translating_methods
class SqlitedosComputerCollection(sd.BackendComputerCollection, aiida_impl.BackendComputerCollection):
    ENTITY_CLASS = SqlitedosComputer

    def create(self, **kwargs: Any) -> SqlitedosComputer:
        with translated_errors():
            return SqlitedosComputer(self._backend, **kwargs)


@translating_methods
class SqlitedosAuthInfoCollection(sd.BackendAuthInfoCollection, aiida_impl.BackendAuthInfoCollection):
    ENTITY_CLASS = SqlitedosAuthInfo

    def create(self, **kwargs: Any) -> SqlitedosAuthInfo:
        with translated_errors():
            return SqlitedosAuthInfo(self._backend, **kwargs)


@translating_methods
class SqlitedosNodeCollection(sd.BackendNodeCollection, aiida_impl.BackendNodeCollection):
    ENTITY_CLASS = SqlitedosNode

    def create(self, node_type: str, user: Any, **kwargs: Any) -> SqlitedosNode:
        """A new, unstored node; a label or description of None is empty, as aiida stores it."""
        for name in ('label', 'description'):
            if name in kwargs and kwargs[name] is None:
                kwargs[name] = ''
        if kwargs.get('ctime') is None:
            kwargs['ctime'] = now()  # aiida sets the creation time when the node is made, not when stored
        with translated_errors():
            return SqlitedosNode(self._backend, node_type, user, **kwargs)


@translating_methods
class SqlitedosGroupCollection(sd.BackendGroupCollection, aiida_impl.BackendGroupCollection):
    ENTITY_CLASS = SqlitedosGroup

    def create(self, label: str, user: Any, **kwargs: Any) -> SqlitedosGroup:
        with translated_errors():
            return SqlitedosGroup(self._backend, label, user, **kwargs)


@translating_methods
class SqlitedosCommentCollection(_AiidaCollection, sd.BackendCommentCollection, aiida_impl.BackendCommentCollection):
    ENTITY_CLASS = SqlitedosComment

    def delete(self, comment_id: int) -> None:
        """Delete a comment; ``NotExistent`` if there is none with that id."""
        self._delete_one(comment_id, 'Comment')

    def create(self, node: Any, user: Any, content: str | None = None, **kwargs: Any) -> SqlitedosComment:
        if kwargs.get('ctime') is None:
            kwargs['ctime'] = now()  # aiida sets the creation time when the comment is made, not when stored
        with translated_errors():
            return SqlitedosComment(self._backend, node, user, content, **kwargs)


@translating_methods
class SqlitedosLogCollection(_AiidaCollection, sd.BackendLogCollection, aiida_impl.BackendLogCollection):
    ENTITY_CLASS = SqlitedosLog

    def delete(self, log_id: int) -> None:
        """Delete a log record; ``NotExistent`` if there is none with that id."""
        self._delete_one(log_id, 'Log')

    def create(self, **kwargs: Any) -> SqlitedosLog:
        with translated_errors():
            return SqlitedosLog(self._backend, **kwargs)
