"""A query dict (the shape of aiida's ``QueryBuilder.as_dict()``) parsed once into small frozen objects.

Every check of the dict happens here, each failure an ``InputValidationError`` naming the offending part and what
is expected; the compiler trusts what it gets. Nothing here knows SQL text beyond the names in ``tables.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlitedos.exceptions import InputValidationError
from sqlitedos.query import joins as joins_module
from sqlitedos.query.fields import Field, Scope, parse_field
from sqlitedos.query.operators import OPERATORS, Operator, check_operand
from sqlitedos.tables import TABLES, Table

__all__ = (
    'CASTS',
    'FUNCS',
    'Combination',
    'Comparison',
    'Filter',
    'OrderTerm',
    'ParsedQuery',
    'ProjectionSpec',
    'Vertex',
    'check_paging',
    'order_entries',
    'parse_query',
    'projection_entries',
)

QUERY_KEYS = frozenset({'path', 'filters', 'project', 'project_map', 'order_by', 'limit', 'offset', 'distinct'})
PATH_KEYS = frozenset({'entity_type', 'orm_base', 'tag', 'joining_keyword', 'joining_value', 'edge_tag', 'outerjoin'})
#: Logical keys of a filter spec: (negated, glue).
LOGICAL_KEYS: dict[str, tuple[bool, Literal['AND', 'OR']]] = {
    'and': (False, 'AND'),
    'or': (False, 'OR'),
    '~and': (True, 'AND'),
    '!and': (True, 'AND'),
    '~or': (True, 'OR'),
    '!or': (True, 'OR'),
}
FUNCS = frozenset({'count', 'max', 'min'})
CASTS = frozenset({'f', 'i', 'b', 't', 'j', 'd'})
ORDERS = ('asc', 'desc')


# --- the parsed form ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vertex:
    """One vertex of the path; a joined vertex also has its join, the vertex it joins and its edge tag."""

    index: int
    tag: str
    orm_base: str
    table: Table
    join: joins_module.Join | None = None
    joined_to: int = -1
    edge_tag: str | None = None
    outer: bool = False

    @property
    def alias(self) -> str:
        return f't{self.index}'

    @property
    def edge_alias(self) -> str:
        return f'e{self.index}'

    @property
    def edge_has_columns(self) -> bool:
        return self.join is not None and self.join.kind in ('link', 'membership', 'recursive')


@dataclass(frozen=True)
class Comparison:
    """``field <operator> value``, maybe negated (``!==``, ``~like``)."""

    field: Field
    operator: Operator
    value: Any
    negate: bool = False


@dataclass(frozen=True)
class Combination:
    """Filters joined by AND or OR, maybe negated."""

    glue: Literal['AND', 'OR']
    parts: tuple[Filter, ...]
    negate: bool = False


Filter = Comparison | Combination


@dataclass(frozen=True)
class ProjectionSpec:
    """One projected value: ``*`` (``entity``: the whole row as an entity of that orm_base) or a field."""

    tag: str
    key: str
    field: Field | None = None
    func: str | None = None
    cast: str | None = None
    entity: str | None = None
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrderTerm:
    """One ``order_by`` field."""

    tag: str
    field: Field
    descending: bool = False
    cast: str | None = None


@dataclass(frozen=True)
class ParsedQuery:
    """The whole query: vertices, filters by tag, projections in output order, ordering, paging."""

    vertices: tuple[Vertex, ...]
    scopes: Mapping[str, Scope]
    filters: Mapping[str, Filter]
    projections: tuple[ProjectionSpec, ...]
    order: tuple[OrderTerm, ...] = ()
    limit: int | None = None
    offset: int | None = None
    distinct: bool = False
    project_map: Mapping[str, Mapping[str, str]] | None = None

    def mentions(self, tag: str, column: str) -> bool:
        """True if a filter, projection or ordering of ``tag`` uses ``column``."""
        fields = [spec.field for spec in self.projections if spec.tag == tag]
        fields += [term.field for term in self.order if term.tag == tag]
        found = any(field is not None and field.column == column for field in fields)
        return found or (tag in self.filters and _filter_mentions(self.filters[tag], column))


def _filter_mentions(node: Filter, column: str) -> bool:
    if isinstance(node, Comparison):
        return node.field.column == column
    return any(_filter_mentions(part, column) for part in node.parts)


# --- parsing ------------------------------------------------------------------------------------------------------


_T = TypeVar('_T')


def refusing_self_holding(function: Callable[[Any], _T], value: Any) -> _T:
    """``function(value)`` for a recursive walk of a query dict, with a clear error for a dict that holds itself (or
    nests deeper than Python recurses) instead of ``RecursionError``."""
    try:
        return function(value)
    except RecursionError:
        raise InputValidationError('the query dict nests too deeply: does it hold itself?') from None


def parse_query(qdict: Any) -> ParsedQuery:
    """Check a query dict and return its parsed form. Raises ``InputValidationError``."""
    if not isinstance(qdict, dict):
        raise InputValidationError(f'a query dict is a dict, not {type(qdict).__name__}')
    unknown = set(qdict) - QUERY_KEYS
    if unknown:
        raise InputValidationError(f'unknown query dict keys {sorted(unknown)}; expected some of {sorted(QUERY_KEYS)}')
    vertices = _parse_path(qdict.get('path'))
    scopes = _scopes(vertices)
    known = {vertex.tag for vertex in vertices} | {vertex.edge_tag for vertex in vertices if vertex.edge_tag}
    sections = {}
    for key in ('filters', 'project', 'project_map'):
        value = qdict.get(key) or {}
        if not isinstance(value, dict):
            raise InputValidationError(f'"{key}" must be a dict of tag -> spec, not {value!r}')
        for tag, spec in value.items():
            if tag not in known:
                raise InputValidationError(f'unknown tag {tag!r} in "{key}"; the tags are {sorted(known)}')
            if tag not in scopes and spec:
                raise InputValidationError(
                    f'edge tag {tag!r} has no columns (only link, group-membership and recursive edges have); '
                    f'remove its {key}'
                )
        sections[key] = value
    filters = {}
    for tag, spec in sections['filters'].items():
        parsed = _parse_filter_spec(scopes[tag], spec) if spec else None
        if parsed is not None and parsed != _TRUE:
            filters[tag] = parsed
    paging = {name: check_paging(name, qdict.get(name)) for name in ('limit', 'offset')}
    return ParsedQuery(
        vertices=vertices,
        scopes=scopes,
        filters=filters,
        projections=_parse_projections(vertices, scopes, sections['project']),
        order=_parse_order(qdict.get('order_by') or [], scopes),
        limit=paging['limit'],
        offset=paging['offset'],
        distinct=bool(qdict.get('distinct')),
        project_map={tag: dict(mapping or {}) for tag, mapping in sections['project_map'].items()},
    )


def check_paging(name: str, value: Any) -> int | None:
    """``limit`` or ``offset``: a non-negative 64-bit int, or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63):
        raise InputValidationError(f'"{name}" must be a non-negative 64-bit int or None, not {value!r}')
    return value


def _parse_path(path: Any) -> tuple[Vertex, ...]:
    if not isinstance(path, list) or not path:
        raise InputValidationError('the query dict needs a non-empty list under "path"')
    vertices: list[Vertex] = []
    tags: dict[str, int] = {}
    for index, item in enumerate(path):
        vertices.append(_parse_path_item(index, item, vertices, tags))
    return tuple(vertices)


def _parse_path_item(index: int, item: Any, vertices: list[Vertex], tags: dict[str, int]) -> Vertex:
    if not isinstance(item, dict):
        raise InputValidationError(f'path item {index} must be a dict, not {item!r}')
    unknown = set(item) - PATH_KEYS
    if unknown:
        raise InputValidationError(f'unknown keys {sorted(unknown)} in path item {index}; expected {sorted(PATH_KEYS)}')
    tag, orm_base = item.get('tag'), item.get('orm_base')
    if not isinstance(tag, str) or not tag or '--' in tag or tag in tags:
        raise InputValidationError(f'path item {index} needs a unique str tag without "--", not {tag!r}')
    if orm_base not in joins_module.ORM_BASE_TABLES:
        raise InputValidationError(
            f'unknown orm_base {orm_base!r} of tag {tag!r}; expected one of {sorted(joins_module.ORM_BASE_TABLES)}'
        )
    table = TABLES[joins_module.ORM_BASE_TABLES[orm_base]]
    keyword, target = item.get('joining_keyword'), item.get('joining_value')
    tags[tag] = index
    if index == 0:
        if keyword is not None:
            raise InputValidationError(f'the first vertex {tag!r} cannot have a joining keyword ({keyword!r})')
        return Vertex(index, tag, orm_base, table)
    if orm_base == 'link':
        raise InputValidationError(f'a link vertex ({tag!r}) can only be the first vertex of the path')
    if target not in tags or target == tag:
        known = sorted(name for name in tags if name != tag)
        raise InputValidationError(f'vertex {tag!r} joins unknown tag {target!r}; the tags are {known}')
    if not isinstance(keyword, str):
        raise InputValidationError(f'vertex {tag!r} needs a joining keyword, not {keyword!r}')
    joined_to = tags[target]
    join = joins_module.lookup(orm_base, keyword, vertices[joined_to].orm_base)
    edge_tag = item.get('edge_tag') or f'{target}--{tag}'
    if edge_tag in tags or any(vertex.edge_tag == edge_tag for vertex in vertices):
        raise InputValidationError(f'edge tag {edge_tag!r} of vertex {tag!r} is not unique')
    return Vertex(index, tag, orm_base, table, join, joined_to, edge_tag, bool(item.get('outerjoin', False)))


def _scopes(vertices: tuple[Vertex, ...]) -> dict[str, Scope]:
    scopes = {vertex.tag: Scope(vertex.tag, vertex.table, vertex.orm_base) for vertex in vertices}
    for vertex in vertices[1:]:
        assert vertex.join is not None and vertex.edge_tag is not None
        if vertex.join.kind in ('link', 'membership'):
            scopes[vertex.edge_tag] = Scope(vertex.edge_tag, TABLES[vertex.join.edge_table])
        elif vertex.join.kind == 'recursive':
            scopes[vertex.edge_tag] = Scope(vertex.edge_tag, None)
    return scopes


# --- filters ------------------------------------------------------------------------------------------------------


def _parse_filter_spec(scope: Scope, spec: Any) -> Filter | None:
    """A tag's filter spec (``{field: value or operator dict, logical key: [specs]}``), its parts ANDed."""
    if not isinstance(spec, dict):
        raise InputValidationError(f'the filters of tag {scope.tag!r} must be a dict, not {spec!r}')
    parts: list[Filter] = []
    for key, value in spec.items():
        if key in LOGICAL_KEYS:
            negate, glue = LOGICAL_KEYS[key]
            if not isinstance(value, (list, tuple)) or not value:
                raise InputValidationError(f'logical key {key!r} of tag {scope.tag!r} needs a non-empty list')
            subs = [_parse_filter_spec(scope, sub) for sub in value]
            parts.append(_any_of(glue, tuple(_true_if_none(sub) for sub in subs), negate))
        else:
            field = parse_field(scope, key)
            operators = value if isinstance(value, dict) else {'==': value}
            parts.append(_parse_operators(scope, field, operators))
    return _all_of(parts)


_TRUE = Combination('AND', ())


def _true_if_none(node: Filter | None) -> Filter:
    return _TRUE if node is None else node


def _all_of(parts: list[Filter]) -> Filter | None:
    """``parts`` ANDed, without the parts that hold everywhere (``_TRUE``, when every part is one)."""
    if not parts:
        return None
    kept = [part for part in parts if part != _TRUE]
    if not kept:
        return _TRUE
    return kept[0] if len(kept) == 1 else Combination('AND', tuple(kept))


def _any_of(glue: Literal['AND', 'OR'], parts: tuple[Filter, ...], negate: bool) -> Filter:
    """A logical combination, simplified where a part holds everywhere (AND drops it, OR becomes it)."""
    if glue == 'AND':
        combined = _all_of(list(parts))
        assert combined is not None
    else:
        combined = _TRUE if _TRUE in parts else Combination('OR', parts)
    if not negate:
        return combined
    if isinstance(combined, Combination) and not combined.negate:
        return Combination(combined.glue, combined.parts, True)
    return Combination('AND', (combined,), True)


def _parse_operators(scope: Scope, field: Field, operators: dict) -> Filter:
    """An operator dict for one field: the operators ANDed, each maybe negated by ``~``/``!``."""
    if not operators:
        raise InputValidationError(f'empty operator dict for field {field.name!r} of tag {scope.tag!r}')
    parts: list[Filter] = []
    for raw_name, value in operators.items():
        negate = isinstance(raw_name, str) and raw_name[:1] in ('~', '!')
        name = raw_name[1:] if negate else raw_name
        if name in ('and', 'or'):
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, dict) for v in value):
                raise InputValidationError(
                    f'operator {raw_name!r} on field {field.name!r} needs a non-empty list of operator dicts'
                )
            subs = tuple(_parse_operators(scope, field, sub) for sub in value)
            parts.append(_any_of('AND' if name == 'and' else 'OR', subs, negate))
            continue
        operator = OPERATORS.get(name) if isinstance(name, str) else None
        if operator is None:
            raise InputValidationError(
                f'unknown operator {raw_name!r} on field {field.name!r} of tag {scope.tag!r}; expected one of: '
                f'{", ".join(sorted(OPERATORS))}, and, or (each may be negated with ~ or !)'
            )
        try:
            check_operand(operator, 'json' if field.is_json else field.kind, value)
        except InputValidationError as exc:
            raise InputValidationError(f'{exc} (field {field.name!r} of tag {scope.tag!r})') from None
        comparison = Comparison(field, operator, value, negate)
        parts.append(_TRUE if matches_everything(scope, comparison) else comparison)
    result = _all_of(parts)
    assert result is not None
    return result


#: Operators whose pattern of only ``%`` matches every non-NULL value of a text column.
_PATTERN_OPERATORS = frozenset({'like', 'ilike'})
_TEXT_KINDS = frozenset({'text', 'uuid'})


def matches_everything(scope: Scope, comparison: Comparison) -> bool:
    """True if ``comparison`` holds on every row: a ``like``/``ilike`` pattern of only ``%`` on a NOT NULL text
    column (the ``node_type LIKE '%'`` aiida's base Node class adds). Such a filter is dropped when parsing: it
    changes no answer, and would keep an index from answering alone.

    Nothing else is dropped: an ``in`` list or a range can only be known to hold everywhere from the data.
    """
    field, value = comparison.field, comparison.value
    if comparison.negate or comparison.operator.name not in _PATTERN_OPERATORS or field.is_json or field.recursive:
        return False
    if scope.table is None or field.kind not in _TEXT_KINDS or scope.table.column(field.column).nullable:
        return False
    return isinstance(value, str) and bool(value) and value.strip('%') == ''


# --- projections --------------------------------------------------------------------------------------------------


def projection_entries(tag: str, spec: Any) -> list[tuple[str, dict]]:
    """A tag's projections (a str, a dict or a list of either) as ``(key, options)`` pairs."""
    if spec in (None, []):
        return []
    if isinstance(spec, (str, dict)):
        spec = [spec]
    if not isinstance(spec, (list, tuple)):
        raise InputValidationError(f'the projections of tag {tag!r} must be a str, dict or list, not {spec!r}')
    entries: list[tuple[str, dict]] = []
    for entry in spec:
        if isinstance(entry, str):
            entries.append((entry, {}))
        elif isinstance(entry, dict):
            for key, options in entry.items():
                options = options or {}
                if not isinstance(options, dict) or set(options) - {'func', 'cast'}:
                    raise InputValidationError(
                        f'projection {key!r} of tag {tag!r}: options must be a dict with keys func and cast only'
                    )
                entries.append((key, dict(options)))
        else:
            raise InputValidationError(f'invalid projection {entry!r} of tag {tag!r}: expected a str or a dict')
    return entries


def _parse_projections(
    vertices: tuple[Vertex, ...], scopes: Mapping[str, Scope], projects: dict
) -> tuple[ProjectionSpec, ...]:
    order = [vertex.tag for vertex in vertices] + [vertex.edge_tag for vertex in vertices if vertex.edge_tag]
    specs: list[ProjectionSpec] = []
    for tag in order:
        seen: set[str] = set()
        for key, options in projection_entries(tag, projects.get(tag)):
            if key in seen:
                raise InputValidationError(f'{key!r} is projected twice for tag {tag!r}')
            seen.add(key)
            specs.extend(_parse_projection(scopes[tag], key, options))
    if not specs:
        specs.extend(_parse_projection(scopes[vertices[-1].tag], '*', {}))
    return tuple(specs)


def _parse_projection(scope: Scope, key: str, options: dict) -> list[ProjectionSpec]:
    func, cast = options.get('func'), options.get('cast')
    if func is not None and func not in FUNCS:
        raise InputValidationError(
            f'unknown func {func!r} on {key!r} of tag {scope.tag!r}; expected one of: {sorted(FUNCS)}'
        )
    if cast is not None and cast not in CASTS:
        raise InputValidationError(
            f'unknown cast {cast!r} on {key!r} of tag {scope.tag!r}; expected one of: {", ".join(sorted(CASTS))}'
        )
    if key == '**':
        # aiida expands ``**`` into one projection per column (keys: the column names).
        if func is not None:
            raise InputValidationError(f'func cannot be applied to "**" (tag {scope.tag!r})')
        return [ProjectionSpec(scope.tag, name, parse_field(scope, name)) for name in scope.column_names]
    if key == '*':
        if func is not None:
            raise InputValidationError(f'func {func!r} cannot be applied to "*" (tag {scope.tag!r})')
        if scope.table is None or not scope.orm_base or scope.orm_base == 'link':
            raise InputValidationError(f'"*" cannot be projected on tag {scope.tag!r}; project "**" or columns')
        return [ProjectionSpec(scope.tag, key, entity=scope.orm_base, columns=scope.table.column_names)]
    return [ProjectionSpec(scope.tag, key, parse_field(scope, key), func, cast)]


# --- ordering -----------------------------------------------------------------------------------------------------


def order_entries(tag: str, fields: Any) -> list[tuple[str, dict]]:
    """One tag's ``order_by`` fields (a str, a dict or a list of either) as ``(key, {'order', 'cast'})`` pairs."""
    if isinstance(fields, (str, dict)):
        fields = [fields]
    if not isinstance(fields, (list, tuple)):
        raise InputValidationError(f'invalid order_by fields {fields!r} of tag {tag!r}: expected a str, dict or list')
    out: list[tuple[str, dict]] = []
    for entry in fields:
        if isinstance(entry, str):
            items: Any = [(entry, {})]
        elif isinstance(entry, dict):
            items = entry.items()
        else:
            raise InputValidationError(f'invalid order_by field {entry!r} of tag {tag!r}: expected a str or a dict')
        for key, options in items:
            options = {'order': options} if isinstance(options, str) else options
            if not isinstance(options, dict) or set(options) - {'order', 'cast'}:
                raise InputValidationError(
                    f'order_by on {key!r} of tag {tag!r}: options must be a dict with keys order and cast only'
                )
            order = options.get('order', 'asc')
            if order not in ORDERS:
                raise InputValidationError(f'order {order!r} on {key!r} of tag {tag!r}; expected "asc" or "desc"')
            out.append((key, {'order': order, **({'cast': options['cast']} if 'cast' in options else {})}))
    return out


def order_specs(order_by: Any, tags: Any) -> list[tuple[str, list[tuple[str, dict]]]]:
    """``order_by`` (a dict or a list of ``{tag: fields}`` dicts) as ``(tag, entries)`` pairs."""
    if isinstance(order_by, dict):
        order_by = [order_by]
    if not isinstance(order_by, (list, tuple)):
        raise InputValidationError(f'"order_by" must be a list of {{tag: [fields]}} dicts, not {order_by!r}')
    out = []
    for spec in order_by:
        if not isinstance(spec, dict):
            raise InputValidationError(f'invalid order_by entry {spec!r}: expected a {{tag: [fields]}} dict')
        for tag, fields in spec.items():
            if tag not in tags:
                raise InputValidationError(f'unknown tag {tag!r} in "order_by"; the tags are {sorted(tags)}')
            out.append((tag, order_entries(tag, fields)))
    return out


def _parse_order(order_by: Any, scopes: Mapping[str, Scope]) -> tuple[OrderTerm, ...]:
    terms = []
    for tag, entries in order_specs(order_by, scopes):
        for key, options in entries:
            cast = options.get('cast')
            if cast is not None and cast not in CASTS:
                raise InputValidationError(
                    f'unknown cast {cast!r} on {key!r} of tag {tag!r}; expected one of: {", ".join(sorted(CASTS))}'
                )
            terms.append(OrderTerm(tag, parse_field(scopes[tag], key), options['order'] == 'desc', cast))
    return tuple(terms)
