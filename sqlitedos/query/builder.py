"""The user-facing ``QueryBuilder``: aiida's front-end API with entity type strings in place of ORM classes.

It produces the same query dict as aiida's ``QueryBuilder.as_dict()`` (tags, type filters, edge tags, normalised
projections and ordering) and hands it to the storage's query object.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterator
from typing import Any

from sqlitedos.exceptions import InputValidationError, MultipleObjectsError, NotExistent
from sqlitedos.query.backend import PreparedQuery, QueryBackend, _Bounded, query_key
from sqlitedos.query.joins import JOIN_KEYWORDS, ORM_BASE_TABLES
from sqlitedos.query.parse import check_paging, order_specs, projection_entries, refusing_self_holding

__all__ = ('QueryBuilder', 'escape_for_sql_like', 'group_type_filter', 'node_type_filter')

GROUP_PREFIX = 'group.'
PLAIN_ENTITIES = frozenset({'user', 'computer', 'authinfo', 'comment', 'log', 'link'})
#: aiida swaps in this prefix for AbstractCode (meant to match every code class; see docs/query-semantics.md).
ABSTRACT_CODE = 'data.core.code.abstract.AbstractCode.'


def escape_for_sql_like(value: str) -> str:
    """Escape ``%`` and ``_`` (and the escape character) for a ``LIKE`` pattern with ``ESCAPE '\\'``."""
    return value.replace('\\', '\\\\').replace('%', '\\%').replace('_', '\\_')


def node_type_filter(node_type: str, subclassing: bool = True) -> dict[str, str]:
    """The ``node_type`` filter of a node class: its own type, or (subclassing) every type under its module."""
    if not subclassing:
        return {'==': node_type}
    if node_type == '':
        return {'like': '%'}
    if node_type == ABSTRACT_CODE:
        return {'like': 'data.core.code.%'}
    if not node_type.endswith('.') or node_type.count('.') < 2:
        raise InputValidationError(f'invalid node type string {node_type!r}: expected e.g. "data.core.int.Int."')
    prefix = '.'.join(node_type.split('.')[:-2]) + '.'
    return {'like': escape_for_sql_like(prefix) + '%'}


def group_type_filter(entity_type: str, subclassing: bool = True) -> dict[str, str]:
    """The ``type_string`` filter of a group class given as ``group.<type_string>``."""
    type_string = entity_type[len(GROUP_PREFIX) :]
    if not subclassing:
        return {'==': type_string}
    return {'like': escape_for_sql_like('' if type_string == 'core' else type_string) + '%'}


def _infer_orm_base(entity_type: Any) -> str:
    first = entity_type[0] if isinstance(entity_type, (list, tuple)) and entity_type else entity_type
    if not isinstance(first, str):
        raise InputValidationError(f'entity_type must be a str or a list of str, not {entity_type!r}')
    if first in PLAIN_ENTITIES:
        return first
    if first == 'group' or first.startswith(GROUP_PREFIX):
        return 'group'
    return 'node'


def _tag_basename(entity_type: Any, orm_base: str) -> str:
    types = entity_type if isinstance(entity_type, (list, tuple)) else [entity_type]
    names = []
    for item in types:
        if orm_base == 'node':
            names.append(item.rstrip('.').rsplit('.', 1)[-1] if item else 'node')
        elif orm_base == 'group':
            names.append(item.rsplit('.', 1)[-1] if item.startswith(GROUP_PREFIX) else 'core')
        else:
            names.append(orm_base)
    return '-'.join(names)


def _normalise_projection(tag: str, spec: Any) -> list[dict[str, dict]]:
    return [{key: options} for key, options in projection_entries(tag, spec)]


def _normalise_order(spec: Any, tags: set[str]) -> list[dict[str, list]]:
    return [{tag: [{key: options} for key, options in entries]} for tag, entries in order_specs(spec, tags)]


def _clone(value: Any) -> Any:
    """A deep copy of a query dict's parts: dicts and lists are copied by hand (``copy.deepcopy`` costs ~10x more),
    str/int/float/bool/None are shared, anything else goes through ``copy.deepcopy``."""
    kind = type(value)
    if kind is dict:
        return {key: _clone(item) for key, item in value.items()}
    if kind is list:
        return [_clone(item) for item in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


_ATOMS = frozenset({str, int, float, bool, type(None)})
#: ``as_dict()``'s keys -> the attributes that hold them (a builder made from a known dict gets them shared).
_STATE_ATTRIBUTES = {
    'path': '_path',
    'filters': '_filters',
    'project': '_projections',
    'project_map': '_project_map',
    'order_by': '_order_by',
    'limit': '_limit',
    'offset': '_offset',
    'distinct': '_distinct',
}
FROM_DICT_CACHE_SIZE = 256


class _FromDictCache:
    """Query dicts seen by ``from_dict`` (by ``query_key``) -> the attributes of the builder they gave, so a dict
    seen before skips re-appending every vertex and re-encoding the result. The containers are shared read-only by
    the builders made from them; the first change gives a builder its own copy."""

    def __init__(self, size: int = FROM_DICT_CACHE_SIZE) -> None:
        self._lock = threading.Lock()
        self._entries: _Bounded = _Bounded(size)

    def get(self, key: bytes) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: bytes, attributes: dict[str, Any]) -> None:
        with self._lock:
            self._entries.put(key, attributes)


_FROM_DICT = _FromDictCache()


class QueryBuilder:
    """Build a query by appending vertices; run it on ``backend`` (a sqlitedos storage)."""

    def __init__(
        self,
        backend: Any = None,
        *,
        path: list | tuple = (),
        filters: dict | None = None,
        project: dict | None = None,
        limit: int | None = None,
        offset: int | None = None,
        order_by: Any = None,
        distinct: bool = False,
        project_map: dict | None = None,
    ) -> None:
        if backend is None:
            raise InputValidationError('QueryBuilder needs backend=<a sqlitedos storage>')
        self._backend = backend
        self._prepared: PreparedQuery | None = None
        self._shared = False  # the containers below belong to _FROM_DICT: copy them before any change
        self._state_key: bytes | None = None  # query_key(as_dict()), while known and current
        self._tag_set: set[str] = set()
        self._path: list[dict[str, Any]] = []
        self._filters: dict[str, dict] = {}
        self._projections: dict[str, list] = {}
        self._project_map: dict[str, dict] = {}
        self._order_by: list[dict] = []
        self._limit: int | None = None
        self._offset: int | None = None
        self._distinct = False
        for item in path:
            if isinstance(item, str):
                self.append(entity_type=item)
            elif isinstance(item, dict):
                self._append_path_item(item)
            else:
                raise InputValidationError(f'invalid path item {item!r}: expected a dict or an entity type string')
        for tag, spec in (filters or {}).items():
            self.add_filter(tag, spec)
        for tag, spec in (project or {}).items():
            self.add_projection(tag, spec)
        self._project_map.update(refusing_self_holding(_clone, project_map or {}))
        if order_by:
            self.order_by(order_by)
        self.limit(limit).offset(offset).distinct(distinct)

    @classmethod
    def from_dict(cls, backend: Any, dct: dict) -> QueryBuilder:
        """Rebuild a builder from a query dict (``as_dict()``'s shape); the builder copies what it keeps.

        A dict seen before (the same ``query_key``: equal, with every value of the same type and every dict in the
        same order) reuses the state it gave then; a dict with values other than the built-in ones (datetimes in
        filters, say) is rebuilt every time.
        """
        key = query_key(dct)
        if key is None:
            return cls(backend, **dct)
        known = _FROM_DICT.get(key)
        if known is None:
            builder = cls(backend, **dct)
            state = builder.as_dict()
            builder._state_key = query_key(state)
            attributes = {name: state[item] for item, name in _STATE_ATTRIBUTES.items()}
            attributes.update(
                _tag_set=set(builder._tag_set), _state_key=builder._state_key, _prepared=None, _shared=True
            )
            _FROM_DICT.put(key, attributes)
            return builder
        builder = cls.__new__(cls)
        builder.__dict__.update(known)
        builder._backend = backend
        return builder

    def _append_path_item(self, item: dict) -> None:
        kwargs = {key: value for key, value in item.items() if key not in ('joining_keyword', 'joining_value')}
        if item.get('joining_keyword'):
            kwargs[item['joining_keyword']] = item.get('joining_value')
        self.append(**kwargs)

    # --- building -------------------------------------------------------------------------------------------------

    @property
    def _tags(self) -> set[str]:
        return self._tag_set

    def _changed(self) -> None:
        """Called before the query changes: forget the prepared statement, take a copy of a shared state."""
        self._prepared = None
        self._state_key = None
        if self._shared:
            for name in _STATE_ATTRIBUTES.values():
                setattr(self, name, _clone(getattr(self, name)))
            self._tag_set = set(self._tag_set)
            self._shared = False

    def append(
        self,
        entity_type: Any = '',
        orm_base: str | None = None,
        tag: str | None = None,
        filters: dict | None = None,
        project: Any = None,
        subclassing: bool = True,
        edge_tag: str | None = None,
        edge_filters: dict | None = None,
        edge_project: Any = None,
        outerjoin: bool = False,
        direction: int | None = None,
        **join: Any,
    ) -> QueryBuilder:
        """Add a vertex; ``join`` is one keyword (``with_incoming='tag'``, ...) naming an earlier vertex."""
        orm_base = orm_base or _infer_orm_base(entity_type)
        if orm_base not in ORM_BASE_TABLES:
            raise InputValidationError(f'unknown orm_base {orm_base!r}; expected one of {sorted(ORM_BASE_TABLES)}')
        tag = tag or self._unique_tag(_tag_basename(entity_type, orm_base))
        if not isinstance(tag, str) or '--' in tag or tag in self._tags:
            raise InputValidationError(f'tag {tag!r} is already used or contains "--"')
        keyword, target = self._joining(orm_base, direction, join)
        if keyword is not None:
            edge_tag = edge_tag or f'{target}--{tag}'
            if edge_tag in self._tags or edge_tag == tag:
                raise InputValidationError(f'edge tag {edge_tag!r} is already used')
        elif edge_tag or edge_filters or edge_project:
            raise InputValidationError('the first vertex has no edge: remove edge_tag, edge_filters, edge_project')
        self._changed()
        self._path.append(
            {
                'entity_type': entity_type,
                'orm_base': orm_base,
                'tag': tag,
                'joining_keyword': keyword,
                'joining_value': target,
                'edge_tag': edge_tag,
                'outerjoin': bool(outerjoin),
            }
        )
        self._tag_set.add(tag)
        self._filters[tag] = self._type_filters(entity_type, orm_base, subclassing)
        self._projections[tag] = []
        if filters:
            self.add_filter(tag, filters)
        if project is not None:
            self.add_projection(tag, project)
        if keyword is not None and edge_tag is not None:
            self._tag_set.add(edge_tag)
            self._filters[edge_tag] = {}
            self._projections[edge_tag] = []
            if edge_filters:
                self.add_filter(edge_tag, edge_filters)
            if edge_project is not None:
                self.add_projection(edge_tag, edge_project)
        return self

    def _unique_tag(self, basename: str) -> str:
        for index in itertools.count(1):
            candidate = f'{basename}_{index}'
            if candidate not in self._tags:
                return candidate
        raise AssertionError('unreachable')

    def _joining(self, orm_base: str, direction: int | None, join: dict) -> tuple[str | None, str | None]:
        unknown = set(join) - JOIN_KEYWORDS
        if unknown:
            raise InputValidationError(
                f'unknown append keywords {sorted(unknown)}; join keywords are {sorted(JOIN_KEYWORDS)}'
            )
        if len(join) > 1:
            raise InputValidationError(f'give at most one join keyword, not {sorted(join)}')
        if not self._path:
            if join or direction:
                raise InputValidationError('the first vertex cannot be joined to anything')
            return None, None
        if join:
            ((keyword, target),) = join.items()
        elif direction:
            if orm_base != 'node' or abs(direction) > len(self._path):
                raise InputValidationError(f'invalid direction {direction!r}')
            keyword = 'with_incoming' if direction > 0 else 'with_outgoing'
            target = self._path[-abs(direction)]['tag']
        else:
            keyword = 'with_incoming' if orm_base == 'node' else 'with_node'
            target = self._path[-1]['tag']
        if target not in {item['tag'] for item in self._path}:
            raise InputValidationError(f'join keyword {keyword!r} names unknown tag {target!r}')
        return keyword, target

    @staticmethod
    def _type_filters(entity_type: Any, orm_base: str, subclassing: bool) -> dict:
        if orm_base == 'node':
            if isinstance(entity_type, (list, tuple)):
                return {'node_type': {'or': [node_type_filter(item, subclassing) for item in entity_type]}}
            return {'node_type': node_type_filter(entity_type, subclassing)}
        if orm_base == 'group':
            types = entity_type if isinstance(entity_type, (list, tuple)) else [entity_type]
            types = [item if item.startswith(GROUP_PREFIX) else 'group.core' for item in types]
            if len(types) > 1:
                return {'type_string': {'or': [group_type_filter(item, subclassing) for item in types]}}
            return {'type_string': group_type_filter(types[0], subclassing)}
        return {}

    def _check_tag(self, tag: str) -> str:
        if tag not in self._tags:
            raise InputValidationError(f'unknown tag {tag!r}; the tags are {sorted(self._tags)}')
        return tag

    def add_filter(self, tag: str, filter_spec: dict) -> QueryBuilder:
        """Add (update) filters of a vertex or edge tag."""
        if not isinstance(filter_spec, dict):
            raise InputValidationError(f'filters of tag {tag!r} must be a dict, not {filter_spec!r}')
        self._check_tag(tag)
        self._changed()
        self._filters.setdefault(tag, {}).update(refusing_self_holding(_clone, filter_spec))
        return self

    def add_projection(self, tag: str, projection: Any) -> QueryBuilder:
        """Set the projections of a vertex or edge tag."""
        normalised = _normalise_projection(self._check_tag(tag), projection)
        self._changed()
        self._projections[tag] = normalised
        return self

    def set_project_map(self, tag: str, mapping: dict[str, str]) -> QueryBuilder:
        """Rename projected keys of ``tag`` in ``dict()``/``iterdict()`` output."""
        self._check_tag(tag)
        self._changed()
        self._project_map[tag] = dict(mapping)
        return self

    def order_by(self, order_by: Any) -> QueryBuilder:
        """Set the ordering (replacing any earlier one)."""
        normalised = _normalise_order(order_by, self._tags)
        self._changed()
        self._order_by = normalised
        return self

    def limit(self, limit: int | None) -> QueryBuilder:
        self._limit = check_paging('limit', limit)
        self._changed()
        return self

    def offset(self, offset: int | None) -> QueryBuilder:
        self._offset = check_paging('offset', offset)
        self._changed()
        return self

    def distinct(self, value: bool = True) -> QueryBuilder:
        self._distinct = bool(value)
        self._changed()
        return self

    def as_dict(self, copy_: bool = True) -> dict[str, Any]:
        """The query dict, in the shape of aiida's ``QueryBuilder.as_dict()``."""
        data = {key: getattr(self, name) for key, name in _STATE_ATTRIBUTES.items()}
        return _clone(data) if copy_ else data

    queryhelp = property(as_dict)

    # --- running --------------------------------------------------------------------------------------------------

    def _query(self) -> QueryBackend:
        query: QueryBackend = self._backend.query()
        return query

    def prepare(self) -> PreparedQuery:
        """The query parsed and compiled once, kept until the builder changes: running a builder again
        (``all()``, ``count()``, ...) costs only the statement."""
        if self._prepared is None:
            query = self._query()
            known = query.prepared(self._state_key) if self._state_key is not None else None  # skips as_dict
            self._prepared = known if known is not None else query.prepare(self.as_dict(False), key=self._state_key)
        return self._prepared

    def as_sql(self, inline: bool = False) -> str:
        return self._query().as_sql(self.as_dict(False), inline=inline)

    def analyze_query(self) -> str:
        return self._query().analyze_query(self.as_dict(False))

    def count(self) -> int:
        return self.prepare().count()

    def iterall(self, batch_size: int | None = 100) -> Iterator[list[Any]]:
        return self.prepare().iterall(batch_size)

    def iterdict(self, batch_size: int | None = 100) -> Iterator[dict[str, dict[str, Any]]]:
        return self.prepare().iterdict(batch_size)

    def all(self, batch_size: int | None = None, flat: bool = False) -> list[Any]:
        """Every row as a list of projections; ``flat`` chains the rows into one list."""
        rows = self.prepare().all()
        return list(itertools.chain.from_iterable(rows)) if flat else rows

    def dict(self, batch_size: int | None = None) -> list[dict[str, dict[str, Any]]]:
        return list(self.iterdict(batch_size))

    def first(self, flat: bool = False) -> Any:
        """The first row, or None; ``flat`` unwraps a single projection."""
        row = self._query().first(self.as_dict(False))
        if row is None or not flat or len(row) != 1:
            return row
        return row[0]

    def one(self) -> list[Any]:
        """The only row; ``NotExistent`` if none, ``MultipleObjectsError`` if more."""
        data = self.as_dict()
        data['limit'] = 2
        rows = self._query().all(data)
        if not rows:
            raise NotExistent('the query returned no rows, expected exactly one')
        if len(rows) > 1:
            raise MultipleObjectsError('the query returned more than one row, expected exactly one')
        return rows[0]

    def __str__(self) -> str:
        return self.as_sql(inline=True)
