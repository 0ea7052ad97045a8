"""A query dict (the shape of aiida's ``QueryBuilder.as_dict()``) in; (SQL, params) and a row decoder out.

Four stages, each a function: ``validate`` (the dict's shape, tags, keywords), ``compile_query`` (SQL text from
whitelisted identifiers and generated aliases, every value a ``?`` parameter), execution (in ``backend.py``'s
caller, the storage's ``query()`` object) and ``Compiled.decode`` (rows to projected values).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlitedos.db import Fragment
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query import joins as joins_module
from sqlitedos.query.fields import Target, resolve
from sqlitedos.query.operators import OPERATORS, JsonRef, concat
from sqlitedos.query.projections import Projection, compile_projection, order_terms, projection_entries
from sqlitedos.tables import TABLES, Table, quote_identifier

__all__ = ('Compiled', 'compile_query', 'validate')

QUERY_KEYS = frozenset({'path', 'filters', 'project', 'project_map', 'order_by', 'limit', 'offset', 'distinct'})
PATH_KEYS = frozenset({'entity_type', 'orm_base', 'tag', 'joining_keyword', 'joining_value', 'edge_tag', 'outerjoin'})
LOGICAL_KEYS = {
    'and': (False, ' AND '),
    'or': (False, ' OR '),
    '~and': (True, ' AND '),
    '!and': (True, ' AND '),
    '~or': (True, ' OR '),
    '!or': (True, ' OR '),
}


# --- validation ---------------------------------------------------------------------------------------------------


@dataclass
class Vertex:
    """One vertex of the path, with its generated SQL alias and, for joined vertices, the edge."""

    index: int
    tag: str
    orm_base: str
    table: Table
    alias: str
    join: joins_module.Join | None = None
    joined_to: int = -1
    edge_tag: str | None = None
    outer: bool = False

    @property
    def edge_alias(self) -> str:
        return f'e{self.index}'


def validate(qdict: Any) -> list[Vertex]:
    """Check the dict's shape, tags and join keywords; return the vertices. Raises ``InputValidationError``."""
    if not isinstance(qdict, dict):
        raise InputValidationError(f'a query dict is a dict, not {type(qdict).__name__}')
    unknown = set(qdict) - QUERY_KEYS
    if unknown:
        raise InputValidationError(f'unknown query dict keys {sorted(unknown)}; expected some of {sorted(QUERY_KEYS)}')
    path = qdict.get('path')
    if not isinstance(path, list) or not path:
        raise InputValidationError('the query dict needs a non-empty list under "path"')
    vertices: list[Vertex] = []
    tags: dict[str, int] = {}
    for index, item in enumerate(path):
        vertices.append(_validate_path_item(index, item, vertices, tags))
    edge_tags = {vertex.edge_tag for vertex in vertices if vertex.edge_tag}
    known = set(tags) | edge_tags
    for key in ('filters', 'project', 'project_map'):
        value = qdict.get(key) or {}
        if not isinstance(value, dict):
            raise InputValidationError(f'"{key}" must be a dict of tag -> spec, not {value!r}')
        for tag in value:
            if tag not in known:
                raise InputValidationError(f'unknown tag {tag!r} in "{key}"; the tags are {sorted(known)}')
    for name in ('limit', 'offset'):
        value = qdict.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63):
            raise InputValidationError(f'"{name}" must be a non-negative 64-bit int or None, not {value!r}')
    return vertices


def _validate_path_item(index: int, item: Any, vertices: list[Vertex], tags: dict[str, int]) -> Vertex:
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
    vertex = Vertex(index, tag, orm_base, TABLES[joins_module.ORM_BASE_TABLES[orm_base]], f't{index}')
    keyword, target = item.get('joining_keyword'), item.get('joining_value')
    if index == 0:
        if keyword is not None:
            raise InputValidationError(f'the first vertex {tag!r} cannot have a joining keyword ({keyword!r})')
    else:
        if orm_base == 'link':
            raise InputValidationError(f'a link vertex ({tag!r}) can only be the first vertex of the path')
        if target not in tags:
            raise InputValidationError(f'vertex {tag!r} joins unknown tag {target!r}; the tags are {sorted(tags)}')
        if not isinstance(keyword, str):
            raise InputValidationError(f'vertex {tag!r} needs a joining keyword, not {keyword!r}')
        vertex.joined_to = tags[target]
        vertex.join = joins_module.lookup(orm_base, keyword, vertices[vertex.joined_to].orm_base)
        vertex.edge_tag = item.get('edge_tag') or f'{target}--{tag}'
        vertex.outer = bool(item.get('outerjoin', False))
        if vertex.edge_tag in tags or any(v.edge_tag == vertex.edge_tag for v in vertices):
            raise InputValidationError(f'edge tag {vertex.edge_tag!r} of vertex {tag!r} is not unique')
    tags[tag] = index
    return vertex


# --- filters ------------------------------------------------------------------------------------------------------


def and_(parts: list[Fragment]) -> Fragment:
    """Parenthesised conjunction; the empty conjunction is true."""
    if not parts:
        return Fragment('1')
    if len(parts) == 1:
        return parts[0]
    out: list[Any] = ['(']
    for index, part in enumerate(parts):
        out.extend([' AND ', part] if index else [part])
    out.append(')')
    return concat(*out)


def _join_parts(parts: list[Fragment], separator: str) -> Fragment:
    out: list[Any] = ['(']
    for index, part in enumerate(parts):
        out.extend([separator, part] if index else [part])
    out.append(')')
    return concat(*out)


def compile_filters(target: Target, spec: Any) -> Fragment:
    """The WHERE condition of one tag's filter spec."""
    if not isinstance(spec, dict):
        raise InputValidationError(f'the filters of tag {target.tag!r} must be a dict, not {spec!r}')
    parts = []
    for key, value in spec.items():
        if key in LOGICAL_KEYS:
            negate, separator = LOGICAL_KEYS[key]
            if not isinstance(value, (list, tuple)) or not value:
                raise InputValidationError(f'logical key {key!r} of tag {target.tag!r} needs a non-empty list')
            combined = _join_parts([compile_filters(target, sub) for sub in value], separator)
            parts.append(concat('NOT ', combined) if negate else combined)
        else:
            column_sql, kind, ref = resolve(target, key)
            operators = value if isinstance(value, dict) else {'==': value}
            parts.append(compile_operators(target, key, column_sql, kind, ref, operators))
    return and_(parts)


def compile_operators(
    target: Target, field_name: str, column_sql: str, kind: str, ref: JsonRef | None, operators: dict
) -> Fragment:
    """An operator dict for one field: the operators ANDed, each maybe negated by ``~``/``!``."""
    if not operators:
        raise InputValidationError(f'empty operator dict for field {field_name!r} of tag {target.tag!r}')
    parts = []
    for raw_name, value in operators.items():
        negate = isinstance(raw_name, str) and raw_name[:1] in ('~', '!')
        name = raw_name[1:] if negate else raw_name
        if name in ('and', 'or'):
            if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, dict) for v in value):
                raise InputValidationError(
                    f'operator {raw_name!r} on field {field_name!r} needs a non-empty list of operator dicts'
                )
            subs = [compile_operators(target, field_name, column_sql, kind, ref, sub) for sub in value]
            fragment = _join_parts(subs, ' AND ' if name == 'and' else ' OR ')
        else:
            fragment = _compile_one(target, field_name, column_sql, kind, ref, name, raw_name, value)
        parts.append(concat('NOT ', fragment) if negate else fragment)
    return and_(parts)


def _compile_one(
    target: Target,
    field_name: str,
    column_sql: str,
    kind: str,
    ref: JsonRef | None,
    name: Any,
    raw_name: Any,
    value: Any,
) -> Fragment:
    operator = OPERATORS.get(name) if isinstance(name, str) else None
    if operator is None:
        raise InputValidationError(
            f'unknown operator {raw_name!r} on field {field_name!r} of tag {target.tag!r}; expected one of: '
            f'{", ".join(sorted(OPERATORS))}, and, or (each may be negated with ~ or !)'
        )
    operator.check(value)
    if ref is not None:
        if operator.on_json is None:
            raise _unsupported(operator.name, field_name, 'JSON values')
        return operator.on_json(ref, value)
    if operator.on_column is None:
        allowed = sorted(name for name, row in OPERATORS.items() if row.on_column is not None)
        raise InputValidationError(
            f'operator {operator.name!r} does not apply to the plain column {field_name!r} of tag {target.tag!r}; '
            f'expected one of: {", ".join(allowed)}'
        )
    return operator.on_column(column_sql, kind, value)


def _unsupported(name: str, field_name: str, what: str) -> InputValidationError:
    return InputValidationError(f'operator {name!r} does not apply to {what} (field {field_name!r})')


# --- the whole query ----------------------------------------------------------------------------------------------


@dataclass
class Compiled:
    """The compiled query: SQL text, parameters and the projections (for decoding rows)."""

    sql: str
    params: tuple
    projections: list[Projection]
    project_map: dict = field(default_factory=dict)
    pk_walk: PkWalk | None = None

    def __post_init__(self) -> None:
        starts, start = [], 0
        for projection in self.projections:
            starts.append(start)
            start += len(projection.sql)
        self._plan = [(projection.decode, index) for projection, index in zip(self.projections, starts)]
        self._all_plain = all(projection.plain for projection in self.projections)
        self._single = self.projections[0].decode if len(self.projections) == 1 else None

    def decode(self, row: tuple) -> list[Any]:
        """A result row -> the projected values in order."""
        if self._all_plain:
            return list(row)
        if self._single is not None:
            return [self._single(row, 0)]
        return [decode(row, index) for decode, index in self._plan]

    def decode_dict(self, row: tuple) -> dict[str, dict[str, Any]]:
        """A result row -> ``{tag: {key: value}}`` with ``project_map`` applied to the keys."""
        out: dict[str, dict[str, Any]] = {}
        for projection, value in zip(self.projections, self.decode(row)):
            key = self.project_map.get(projection.tag, {}).get(projection.key, projection.key)
            out.setdefault(projection.tag, {})[key] = value
        return out


def _targets(vertices: list[Vertex]) -> tuple[dict[str, Target], list[tuple[str, Vertex]]]:
    targets: dict[str, Target] = {}
    edges: list[tuple[str, Vertex]] = []
    for vertex in vertices:
        targets[vertex.tag] = Target(vertex.tag, vertex.alias, vertex.table, vertex.orm_base)
    for vertex in vertices[1:]:
        assert vertex.join is not None and vertex.edge_tag is not None
        if vertex.join.kind in ('link', 'membership'):
            targets[vertex.edge_tag] = Target(vertex.edge_tag, vertex.edge_alias, TABLES[vertex.join.edge_table])
        elif vertex.join.kind == 'recursive':
            targets[vertex.edge_tag] = Target(vertex.edge_tag, vertex.edge_alias, None)
        edges.append((vertex.edge_tag, vertex))
    return targets, edges


def compile_query(qdict: dict, builder: Callable | None = None) -> Compiled:
    """Validate and compile a query dict; ``builder(orm_base, row)`` builds the entity of a ``*`` projection."""
    vertices = validate(qdict)
    targets, edges = _targets(vertices)
    filters = qdict.get('filters') or {}
    projects = qdict.get('project') or {}
    for edge_tag, _ in edges:
        if edge_tag not in targets and (filters.get(edge_tag) or projects.get(edge_tag)):
            raise InputValidationError(
                f'edge tag {edge_tag!r} has no columns (only link, group-membership and recursive edges have); '
                'remove its filters and projections'
            )
    projections = _compile_projections(vertices, edges, targets, projects, builder)
    outer_tags = {tag for vertex in vertices if vertex.outer for tag in (vertex.tag, vertex.edge_tag)}
    where = and_(
        [compile_filters(targets[tag], spec) for tag, spec in filters.items() if spec and tag not in outer_tags]
    )
    order = _compile_order(qdict.get('order_by') or [], targets)
    ctes, from_sql = _compile_from(vertices, targets, filters, projects, qdict)
    select = [p for projection in projections for p in projection.sql]
    parts: list[Any] = []
    if ctes:
        parts.extend(['WITH RECURSIVE ', *_comma(ctes), ' '])
    parts.append('SELECT DISTINCT ' if qdict.get('distinct') else 'SELECT ')
    parts.extend(_comma(select))
    parts.extend([' ', from_sql])
    if where.sql != '1':
        parts.extend([' WHERE ', where])
    if order:
        parts.extend([' ORDER BY ', *_comma(order)])
    limit, offset = qdict.get('limit'), qdict.get('offset')
    if limit is not None or offset is not None:
        parts.append(Fragment(' LIMIT ? OFFSET ?', (-1 if limit is None else limit, offset or 0)))
    fragment = concat(*parts)
    compiled = Compiled(fragment.sql, fragment.params, projections, qdict.get('project_map') or {})
    compiled.pk_walk = _pk_walk(vertices, targets, filters, qdict, fragment)
    return compiled


#: Filter keys that no index serves: a walk in primary-key order is never slowed by an index they would have used.
_UNINDEXED_PREFIXES = ('attributes', 'extras')


def _pk_walk(vertices, targets, filters, qdict, fragment: Fragment) -> PkWalk | None:
    """The alternative plan for "the newest (or oldest) N nodes of a type": walk the primary key, no index.

    SQLite estimates a ``node_type`` range to be selective and so sorts every node of the type to return N of them;
    when the type is common, walking ids in order and stopping after N matches is far cheaper. The choice needs the
    data (how common the type is), so it is made when the query runs (``QueryBackend``), with the probe given here.
    """
    if len(vertices) != 1 or qdict.get('limit') is None or vertices[0].table.name != 'db_dbnode':
        return None
    vertex = vertices[0]
    order_by = qdict.get('order_by') or []
    if isinstance(order_by, dict):
        order_by = [order_by]
    entries = [entry for spec in order_by for fields in spec.values() for entry in _order_entries(vertex.tag, fields)]
    if len(entries) != 1 or entries[0][0] not in ('id', 'pk'):
        return None
    spec = filters.get(vertex.tag) or {}
    if 'node_type' not in spec or not all(
        key == 'node_type' or key.split('.')[0] in _UNINDEXED_PREFIXES for key in spec
    ):
        return None
    probe = compile_filters(targets[vertex.tag], {'node_type': spec['node_type']})
    table_sql = f'FROM {quote_identifier(vertex.table.name)} AS {vertex.alias}'
    if fragment.sql.count(table_sql) != 1:
        return None
    return PkWalk(
        sql=fragment.sql.replace(table_sql, table_sql + ' NOT INDEXED'),
        probe=Fragment(f'SELECT count(*) FROM (SELECT 1 {table_sql} WHERE {probe.sql} LIMIT ?)', probe.params),
        rows_needed=qdict['limit'] + (qdict.get('offset') or 0),
    )


@dataclass(frozen=True)
class PkWalk:
    """A query's primary-key-order variant (``sql``, same parameters) and the probe that decides when to use it."""

    sql: str
    probe: Fragment
    rows_needed: int


def _comma(fragments: list[Fragment]) -> list[Any]:
    out: list[Any] = []
    for index, fragment in enumerate(fragments):
        out.extend([', ', fragment] if index else [fragment])
    return out


def _compile_projections(vertices, edges, targets, projects, builder) -> list[Projection]:
    order = [vertex.tag for vertex in vertices] + [edge_tag for edge_tag, _ in edges]
    projections: list[Projection] = []
    for tag in order:
        seen: set[str] = set()
        for key, options in projection_entries(tag, projects.get(tag)):
            if key in seen:
                raise InputValidationError(f'{key!r} is projected twice for tag {tag!r}')
            seen.add(key)
            if key == '**':
                # aiida expands ``**`` into one projection per column (keys: the column names).
                if options.get('func') is not None:
                    raise InputValidationError(f'func cannot be applied to "**" (tag {tag!r})')
                target = targets[tag]
                names = target.table.column_names if target.table else tuple(joins_module.RECURSIVE_EDGE_COLUMNS)
                projections.extend(compile_projection(target, name, {}, builder) for name in names)
                continue
            projections.append(compile_projection(targets[tag], key, options, builder))
    if not projections:
        last = vertices[-1]
        projections.append(compile_projection(targets[last.tag], '*', {}, builder))
    return projections


def _compile_order(order_by: Any, targets: dict[str, Target]) -> list[Fragment]:
    if isinstance(order_by, dict):
        order_by = [order_by]
    if not isinstance(order_by, list):
        raise InputValidationError(f'"order_by" must be a list of {{tag: [fields]}} dicts, not {order_by!r}')
    terms: list[Fragment] = []
    for spec in order_by:
        if not isinstance(spec, dict):
            raise InputValidationError(f'invalid order_by entry {spec!r}')
        for tag, fields in spec.items():
            if tag not in targets:
                raise InputValidationError(f'unknown tag {tag!r} in "order_by"; the tags are {sorted(targets)}')
            for key, options in _order_entries(tag, fields):
                terms.extend(order_terms(targets[tag], key, options))
    return terms


def _order_entries(tag: str, fields: Any) -> list[tuple[str, Any]]:
    if isinstance(fields, (str, dict)):
        fields = [fields]
    if not isinstance(fields, (list, tuple)):
        raise InputValidationError(f'invalid order_by fields {fields!r} of tag {tag!r}')
    out: list[tuple[str, Any]] = []
    for entry in fields:
        if isinstance(entry, str):
            out.append((entry, {}))
        elif isinstance(entry, dict):
            out.extend(entry.items())
        else:
            raise InputValidationError(f'invalid order_by field {entry!r} of tag {tag!r}')
    return out


def _compile_from(vertices, targets, filters, projects, qdict) -> tuple[list[Fragment], Fragment]:
    ctes: list[Fragment] = []
    clauses: list[Any] = [f'FROM {quote_identifier(vertices[0].table.name)} AS {vertices[0].alias}']
    for vertex in vertices[1:]:
        old = vertices[vertex.joined_to]
        join = vertex.join
        if join.kind == 'recursive':
            anchor = Target(old.tag, f'a{vertex.index}', old.table, old.orm_base)
            anchor_filter = compile_filters(anchor, filters.get(old.tag) or {})
            with_path = _uses_path(vertex.edge_tag, filters, projects, qdict.get('order_by'))
            ctes.append(
                joins_module.recursive_cte_sql(
                    join, vertex.edge_alias, old.table.name, anchor.alias, anchor_filter, with_path
                )
            )
        vertex_on = edge_on = None
        if vertex.outer:
            vertex_on = compile_filters(targets[vertex.tag], filters.get(vertex.tag) or {})
            if vertex.edge_tag in targets:
                edge_on = compile_filters(targets[vertex.edge_tag], filters.get(vertex.edge_tag) or {})
        clauses.extend(
            [
                ' ',
                joins_module.join_sql(
                    join,
                    vertex.table.name,
                    vertex.alias,
                    old.alias,
                    vertex.edge_alias,
                    vertex.outer,
                    vertex_on,
                    edge_on,
                ),
            ]
        )
    return ctes, concat(*clauses)


def _uses_path(edge_tag: str, filters: dict, projects: dict, order_by: Any) -> bool:
    mentioned = json.dumps([filters.get(edge_tag), projects.get(edge_tag), order_by], default=str)
    return '"path' in mentioned or '**' in mentioned
