"""Nodes: the vertices of the provenance graph, with attributes, extras, a file tree and links."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlitedos.db import encode_datetime, encode_json, now, translate_errors
from sqlitedos.entities.base import (
    BackendCollection,
    BackendEntity,
    ExtrasMixin,
    clean_value,
    column,
    encode_json_checked,
    new_row_uuid,
    user_column,
)
from sqlitedos.exceptions import ModificationNotAllowed, NotExistent
from sqlitedos.links import (
    DEGREE_COLUMNS,
    PROVENANCE_LINK_TYPES,
    LinkType,
    LinkValidationError,
    link_exists_sql,
    validate_link_kinds,
    validate_link_label,
)

if TYPE_CHECKING:
    from sqlitedos.entities.computers import BackendComputer
    from sqlitedos.entities.users import BackendUser
    from sqlitedos.repository.tree import NodeRepository
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendNode', 'BackendNodeCollection', 'LinkTriple')

INSERT_LINK = 'INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (?, ?, ?, ?)'
SELECT_NODE_TYPES = 'SELECT id, node_type FROM db_dbnode WHERE id IN (?, ?)'
# Is the source reachable from the target along provenance links? Then the new link would close a cycle.
# ``OR reached.id IS NULL`` never holds; without it SQLite builds a bloom filter over the whole link table for every
# new link (63 ms at 1M links; 0.6 ms with it; see sqlitedos/query/joins.py, recursive_cte_sql).
REACHES_ALONG_PROVENANCE = """
WITH RECURSIVE reached(id) AS (
    SELECT ?
    UNION
    SELECT link.output_id FROM db_dblink AS link JOIN reached ON link.input_id = reached.id
    WHERE (link.type IN (SELECT value FROM json_each(?)) OR reached.id IS NULL)
)
SELECT 1 FROM reached WHERE id = ? LIMIT 1
"""
SELECT_INCOMING = """
SELECT node.*, link.type AS link__type, link.label AS link__label
FROM db_dblink AS link JOIN db_dbnode AS node ON node.id = link.input_id
WHERE link.output_id = ? ORDER BY link.id
"""
SELECT_OUTGOING = """
SELECT node.*, link.type AS link__type, link.label AS link__label
FROM db_dblink AS link JOIN db_dbnode AS node ON node.id = link.output_id
WHERE link.input_id = ? ORDER BY link.id
"""
_PROVENANCE_TYPES_JSON = encode_json([link_type.value for link_type in PROVENANCE_LINK_TYPES])


def _degree_message(end: str, degree: str, kind: str, source_pk: int, target_pk: int, label: str) -> str:
    """aiida's message for a link that breaks the ``degree`` rule at ``end`` (``out``: the source, ``in``: the target)."""
    if degree == 'unique_triple':
        return f'a {kind} link with label "{label}" from node<{source_pk}> to node<{target_pk}> already exists'
    node, direction = (source_pk, 'outgoing') if end == 'out' else (target_pk, 'incoming')
    with_label = f' with label "{label}"' if degree == 'unique_pair' else ''
    return f'node<{node}> already has an {direction} {kind} link{with_label}'


class LinkTriple(NamedTuple):
    """A neighbouring node with the type and label of the link that joins it."""

    node: BackendNode
    link_type: LinkType
    link_label: str


class BackendNode(ExtrasMixin, BackendEntity):
    """A row of ``db_dbnode``; ``mtime`` is refreshed on every update."""

    TABLE_NAME = 'db_dbnode'
    ORM_BASE = 'node'
    _repository: NodeRepository | None = None
    MTIME_COLUMN = 'mtime'

    def __init__(
        self,
        backend: StorageBackend,
        node_type: str,
        user: BackendUser,
        computer: BackendComputer | None = None,
        process_type: str | None = None,
        label: str = '',
        description: str = '',
        ctime: dt.datetime | None = None,
        mtime: dt.datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
        extras: Mapping[str, Any] | None = None,
        repository_metadata: Mapping[str, Any] | None = None,
        uuid: str | None = None,
    ) -> None:
        super().__init__(backend, {})
        for name, value in (('ctime', ctime), ('mtime', mtime)):
            if value is not None and not isinstance(value, dt.datetime):
                raise TypeError(f'the given {name} is of type {type(value).__name__}, not a datetime')
        self._row.update(
            uuid=uuid or new_row_uuid(),
            node_type=node_type,
            process_type=process_type,
            label=label,
            description=description,
            ctime=ctime,
            mtime=mtime,
            attributes=dict(attributes or {}),
            extras=dict(extras or {}),
            repository_metadata=dict(repository_metadata or {}),
            dbcomputer_id=None if computer is None else self._require_stored(computer, 'the computer'),
            user_id=self._require_stored(user, 'the user'),
        )
        self._repository = None

    def _after_load(self) -> None:
        row = self._row
        if row.get('attributes') is None:
            row['attributes'] = {}
        if row.get('extras') is None:
            row['extras'] = {}

    def clone(self) -> BackendNode:
        """An unstored copy (new uuid, no times, no links) with the same attributes and extras."""
        row = self._row
        clone = BackendNode.__new__(BackendNode)
        clone._backend = self._backend
        clone._id = None
        clone._repository = None
        clone._row = {
            **row,
            'uuid': new_row_uuid(),
            'ctime': None,
            'mtime': None,
            'attributes': clean_value(row['attributes']),
            'extras': clean_value(row['extras']),
            'repository_metadata': clean_value(row['repository_metadata']),
        }
        if self._repository is not None:
            self._repository.share_pending(clone.repository)  # an unstored node's files are in its sandbox
        return clone

    # --- columns ----------------------------------------------------------------------------------------------

    uuid = column('uuid')
    node_type = column('node_type')

    @property
    def process_type(self) -> str | None:
        return self._row['process_type']

    @process_type.setter
    def process_type(self, value: str | None) -> None:
        self._set_field('process_type', value)

    label = column('label', writable=True)
    description = column('description', writable=True)
    ctime = column('ctime')
    mtime = column('mtime')
    user = user_column()

    @property
    def computer(self) -> BackendComputer | None:
        pk = self._row['dbcomputer_id']
        return None if pk is None else self._backend.computers.get(pk)

    @computer.setter
    def computer(self, computer: BackendComputer | None) -> None:
        self._set_field('dbcomputer_id', None if computer is None else self._require_stored(computer, 'the computer'))

    @property
    def repository_metadata(self) -> dict[str, Any]:
        """The node's virtual file tree (section 3.3 of the spec); fixed once the node is stored."""
        return self._row['repository_metadata'] or {}

    @repository_metadata.setter
    def repository_metadata(self, value: Mapping[str, Any]) -> None:
        if self.is_stored:
            raise ModificationNotAllowed(f'the files of stored node {self.uuid} cannot be changed')
        self._row['repository_metadata'] = dict(value)

    @property
    def repository(self) -> NodeRepository:
        """The node's file tree (``sqlitedos.repository.tree.NodeRepository``), created on first use."""
        if self._repository is None:
            from sqlitedos.repository.tree import NodeRepository

            # tree.BackendNode (the protocol) declares is_stored a settable attribute; here it is a read-only property
            self._repository = NodeRepository(self)  # type: ignore[arg-type]
        return self._repository

    # --- storing ----------------------------------------------------------------------------------------------

    def clean_values(self) -> None:
        """Clean attributes and extras as aiida does before storing."""
        self._row['attributes'] = clean_value(self._row['attributes'])
        self._row['extras'] = clean_value(self._row['extras'])

    def store(
        self, links: Iterable[tuple[BackendNode, LinkType | str, str]] | None = None, clean: bool = True
    ) -> BackendNode:
        """Insert the node (and its cached incoming ``links``, triples of source, type, label) in one transaction."""
        if self._id is not None:
            return self
        backend = self._backend
        session = backend._session()
        row = self._row
        attributes, extras = row['attributes'], row['extras']
        if clean:
            attributes, extras = clean_value(attributes), clean_value(extras)
        ctime = row['ctime'] or now()
        mtime = row['mtime'] or now()
        params = (
            row['uuid'],
            row['node_type'],
            row['process_type'],
            row['label'],
            row['description'],
            encode_datetime(ctime),
            encode_datetime(mtime),
            encode_json_checked(attributes),
            encode_json_checked(extras),
            encode_json_checked(row['repository_metadata']),
            row['dbcomputer_id'],
            row['user_id'],
        )
        if self._repository is not None:
            self._repository.put_pending()  # the files go into the container right before the row commits
        with backend.transaction() as connection, translate_errors():
            pk = connection.execute(self._INSERT, params).fetchone()[0]
            if links:
                seen: set[tuple[Any, ...]] = set()
                for source, link_type, link_label in links:
                    self._insert_link(connection, source, pk, LinkType(link_type), link_label, fresh=seen)
            self._id = pk
            row['attributes'], row['extras'], row['ctime'], row['mtime'] = attributes, extras, ctime, mtime
            session.on_rollback(self)  # a failed commit makes it unstored again (cleaned values are kept)
        if self._repository is not None:
            self._repository.discard_pending()  # committed (or inside an outer block): the container has them
        return self

    # --- links ------------------------------------------------------------------------------------------------

    def add_incoming(self, source: BackendNode, link_type: LinkType | str, link_label: str) -> None:
        """Add a link from ``source`` to this node, both stored; ``LinkValidationError`` names a broken rule."""
        if not isinstance(source, BackendNode):
            raise TypeError(f'source must be a backend node, got {type(source).__name__}: {source!r}')
        if not self.is_stored:
            raise ModificationNotAllowed('node has to be stored when adding an incoming link')
        if not source.is_stored:
            raise ModificationNotAllowed('source node has to be stored when adding a link from it')
        with self._backend.transaction() as connection, translate_errors():
            self._insert_link(connection, source, self._id, LinkType(link_type), link_label)  # type: ignore[arg-type]

    def _insert_link(
        self,
        connection: Any,
        source: BackendNode,
        target_pk: int,
        link_type: LinkType,
        label: str,
        fresh: set[tuple[Any, ...]] | None = None,
    ) -> None:
        """Validate and insert one link. ``fresh``: the target was inserted in this transaction, so its only incoming
        links are the ones this store added (recorded in ``fresh``) and it has no outgoing ones: the target-side
        checks run against that set instead of the database, and no cycle can pass through it."""
        if not isinstance(source, BackendNode):
            raise TypeError(f'source must be a backend node, got {type(source).__name__}: {source!r}')
        if source._backend is not self._backend:
            raise LinkValidationError(
                f'source and target nodes must be stored in the same backend, but got {source._backend} and '
                f'{self._backend}'
            )
        source_pk = self._require_stored(source, 'the source node')
        if source_pk == target_pk:
            raise LinkValidationError(f'cannot add a link to oneself (node {target_pk})')
        validate_link_label(label)
        types = dict(connection.execute(SELECT_NODE_TYPES, (source_pk, target_pk)).fetchall())
        for pk in (source_pk, target_pk):
            if pk not in types:
                raise NotExistent(f'node with pk {pk} does not exist in {self._backend}: it was deleted')
        rule = validate_link_kinds(types[source_pk], types[target_pk], link_type)
        kind = link_type.value
        values = {'input_id': source_pk, 'output_id': target_pk, 'label': label}
        keys = []
        ends = (('out', rule.outdegree), ('in', rule.indegree))
        for end, degree in sorted(ends, key=lambda item: item[1] == 'unique_triple'):  # the triple check last
            columns = DEGREE_COLUMNS[end][degree]
            key = (kind, *(values[column] for column in columns))
            if fresh is not None and 'output_id' in columns:
                keys.append(key)  # a check about the fresh target: only this store's links can clash
                clash = key in fresh
            else:
                clash = connection.execute(link_exists_sql(columns), key).fetchone() is not None
            if clash:
                raise LinkValidationError(_degree_message(end, degree, kind, source_pk, target_pk, label))
        if fresh is not None:
            fresh.update(keys)
        if fresh is None and (
            link_type in PROVENANCE_LINK_TYPES
            and connection.execute(REACHES_ALONG_PROVENANCE, (target_pk, _PROVENANCE_TYPES_JSON, source_pk)).fetchone()
        ):
            raise LinkValidationError(
                f'a {kind} link from node<{source_pk}> to node<{target_pk}> would close a cycle in the provenance '
                'graph: the source already descends from the target'
            )
        connection.execute(INSERT_LINK, (source_pk, target_pk, label, kind))

    def _neighbours(self, sql: str, link_type: LinkType | str | Iterable[LinkType | str] | None) -> list[LinkTriple]:
        if self._id is None:
            return []
        if link_type is None:
            wanted = None
        elif isinstance(link_type, (str, LinkType)):
            wanted = {LinkType(link_type)}
        else:
            wanted = {LinkType(item) for item in link_type}
        with translate_errors():
            cursor = self._backend.get_session().execute(sql, (self._id,))
            names = [description[0] for description in cursor.description]
            rows = [dict(zip(names, values)) for values in cursor.fetchall()]
        triples = []
        for row in rows:
            kind = LinkType(row['link__type'])
            if wanted is None or kind in wanted:
                triples.append(LinkTriple(BackendNode.from_row(self._backend, row), kind, row['link__label']))
        return triples

    def get_incoming(self, link_type: LinkType | str | Iterable[LinkType | str] | None = None) -> list[LinkTriple]:
        """The stored incoming links, in link order, optionally only of the given type(s)."""
        return self._neighbours(SELECT_INCOMING, link_type)

    def get_outgoing(self, link_type: LinkType | str | Iterable[LinkType | str] | None = None) -> list[LinkTriple]:
        """The stored outgoing links, in link order, optionally only of the given type(s)."""
        return self._neighbours(SELECT_OUTGOING, link_type)

    # --- attributes -------------------------------------------------------------------------------------------

    @property
    def attributes(self) -> dict[str, Any]:
        return self._row['attributes']

    def get_attribute(self, key: str) -> Any:
        """The value of an attribute; ``AttributeError`` (``NotExistentAttributeError``) if absent."""
        return self._dict_get('attributes', key)

    def get_attribute_many(self, keys: Iterable[str]) -> list[Any]:
        """The values of several attributes, in order."""
        return [self._dict_get('attributes', key) for key in keys]

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an attribute (cleaned and written at once if stored)."""
        self._dict_set_many('attributes', {key: value})

    def set_attribute_many(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        self._dict_set_many('attributes', attributes)

    def reset_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Replace all attributes."""
        self._dict_set_many('attributes', attributes, reset=True)

    def delete_attribute(self, key: str) -> None:
        """Delete an attribute; ``AttributeError`` if absent."""
        self._dict_delete_many('attributes', [key])

    def delete_attribute_many(self, keys: Iterable[str]) -> None:
        """Delete several attributes; ``AttributeError`` (nothing deleted) if any is absent."""
        self._dict_delete_many('attributes', keys)

    def clear_attributes(self) -> None:
        """Delete all attributes."""
        self._dict_replace('attributes', {})

    def attributes_items(self) -> Iterator[tuple[str, Any]]:
        yield from self._row['attributes'].items()

    def attributes_keys(self) -> Iterator[str]:
        yield from self._row['attributes'].keys()


class BackendNodeCollection(BackendCollection[BackendNode]):
    """The nodes of a storage."""

    ENTITY_CLASS = BackendNode

    def create(self, node_type: str, user: BackendUser, **kwargs: Any) -> BackendNode:
        """A new, unstored node."""
        return BackendNode(self._backend, node_type, user, **kwargs)

    def get(self, pk: int | None = None, **filters: Any) -> BackendNode:
        """The node with this pk (or these column values); ``NotExistent`` if there is none."""
        return super().get(pk, **filters)
