"""A query dict (the shape of aiida's ``QueryBuilder.as_dict()``) in; (SQL, params) and a row decoder out.

Four stages, each a function: ``validate`` (the dict's shape, tags, keywords), ``compile_query`` (SQL text from
whitelisted identifiers and generated aliases, every value a ``?`` parameter), execution (in ``backend.py``'s
caller, the storage's ``query()`` object) and ``Compiled.decode`` (rows to projected values).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlitedos.db import Fragment, decode_datetime, decode_json
from sqlitedos.exceptions import InputValidationError
from sqlitedos.query import joins as joins_module
from sqlitedos.query.operators import OPERATORS, JsonRef, concat
from sqlitedos.tables import COLUMN_ALIASES, TABLES, Column, Table, quote_identifier

__all__ = ('Compiled', 'compile_query', 'validate')

QUERY_KEYS = frozenset({'path', 'filters', 'project', 'project_map', 'order_by', 'limit', 'offset', 'distinct'})
PATH_KEYS = frozenset({'entity_type', 'orm_base', 'tag', 'joining_keyword', 'joining_value', 'edge_tag', 'outerjoin'})
LOGICAL_KEYS = {'and': (False, ' AND '), 'or': (False, ' OR '), '~and': (True, ' AND '), '!and': (True, ' AND '),
                '~or': (True, ' OR '), '!or': (True, ' OR ')}
FUNCS = frozenset({'count', 'max', 'min'})
CASTS = frozenset({'f', 'i', 'b', 't', 'j', 'd'})
#: Characters refused in JSON keys of a field path: they have a meaning in SQLite JSON paths or in SQL, and
#: aiida never writes them (https://www.sqlite.org/json1.html#path_arguments).
_BAD_JSON_KEY = re.compile(r'["\'\\;\[\]$*]|--|[\x00-\x1f]')
#: An index component (``attributes.a.0``) may select an array element; each one doubles the path expression.
MAX_INDEX_COMPONENTS = 4


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
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InputValidationError(f'"{name}" must be a non-negative int or None, not {value!r}')
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


# --- fields -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a tag's fields resolve against: a table (or the recursive edge's columns) under an alias."""

    tag: str
    alias: str
    table: Table | None  # None: a recursive edge
    orm_base: str = ''

    def column(self, name: str) -> tuple[str, str]:
        """The SQL text and kind of the column (or alias) ``name``."""
        if self.table is None:
            if name not in joins_module.RECURSIVE_EDGE_COLUMNS:
                raise _unknown_field(self.tag, name, tuple(joins_module.RECURSIVE_EDGE_COLUMNS))
            return f'{self.alias}.{name}', joins_module.RECURSIVE_EDGE_COLUMNS[name]
        real = self.real_name(name)
        return f'{self.alias}.{quote_identifier(real)}', self.table.column(real).kind

    def real_name(self, name: str) -> str:
        assert self.table is not None
        real = COLUMN_ALIASES.get(self.table.name, {}).get(name, name)
        if real == '_metadata' and self.table.has_column('metadata'):
            real = 'metadata'
        if not self.table.has_column(real):
            aliases = tuple(COLUMN_ALIASES.get(self.table.name, {}))
            raise _unknown_field(self.tag, name, self.table.column_names + aliases)
        return real


def _unknown_field(tag: str, name: str, allowed: tuple[str, ...]) -> InputValidationError:
    return InputValidationError(f'unknown field {name!r} of tag {tag!r}; expected one of: {", ".join(allowed)}')


def json_path(components: list[str], column_sql: str, tag: str) -> Fragment:
    """The SQLite JSON path of ``components`` as a fragment; an all-digit component is an array index where the
    value is an array and an object key otherwise (PostgreSQL's ``#>``)."""
    for component in components:
        if not isinstance(component, str) or not component or _BAD_JSON_KEY.search(component):
            raise InputValidationError(
                f'invalid JSON key {component!r} in a field of tag {tag!r}: keys must be non-empty and contain none '
                'of " \' \\ ; [ ] $ * -- or control characters'
            )
    if not any(component.isdigit() for component in components):
        return Fragment('?', ('$' + ''.join(f'."{c}"' for c in components),))
    if sum(component.isdigit() for component in components) > MAX_INDEX_COMPONENTS:
        raise InputValidationError(f'at most {MAX_INDEX_COMPONENTS} numeric components are supported in a JSON path')
    path, pending = None, '$'
    for component in components:
        if not component.isdigit():
            pending += f'."{component}"'
            continue
        prefix = concat(path, ' || ?', Fragment('', (pending,))) if path else Fragment('?', (pending,))
        step = concat(
            '(', prefix, f" || (CASE json_type({column_sql}, ", prefix, ") WHEN 'array' THEN ? ELSE ? END))",
            Fragment('', (f'[{int(component)}]', f'."{component}"')),
        )
        path, pending = step, ''
    return concat(path, ' || ?', Fragment('', (pending,))) if pending else path  # type: ignore[arg-type]


def resolve(target: Target, field_name: str) -> tuple[str, str, JsonRef | None]:
    """A field path -> (column SQL, column kind, JsonRef or None). JSON columns always resolve to a JsonRef."""
    if not isinstance(field_name, str) or not field_name:
        raise InputValidationError(f'a field of tag {target.tag!r} must be a non-empty str, not {field_name!r}')
    head, *rest = field_name.split('.')
    column_sql, kind = target.column(head)
    if kind != 'json':
        if rest:
            raise InputValidationError(f'field {field_name!r} of tag {target.tag!r}: column {head!r} is not JSON')
        return column_sql, kind, None
    return column_sql, kind, JsonRef(column_sql, json_path(rest, column_sql, target.tag))


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


def _compile_one(target: Target, field_name: str, column_sql: str, kind: str, ref: JsonRef | None,
                 name: Any, raw_name: Any, value: Any) -> Fragment:
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


# --- projections --------------------------------------------------------------------------------------------------


Decoder = Callable[[Any], Any]


def _decode_bool(cell: Any) -> Any:
    return None if cell is None else bool(cell)


def _decode_json_text(cell: Any) -> Any:
    return None if cell is None else json.loads(cell)


def _cell(row: tuple, index: int) -> Any:
    return row[index]


def _decode_typed(row: tuple, index: int) -> Any:
    """(json_type, json_extract) -> the Python value, keeping JSON booleans (json_extract gives 1/0 for them)."""
    json_type, value = row[index], row[index + 1]
    if json_type == 'true':
        return True
    if json_type == 'false':
        return False
    if json_type == 'array' or json_type == 'object':
        return json.loads(value)
    return value


def _decode_json_datetime(cell: Any) -> Any:
    if cell is None:
        return None
    try:
        value = dt.datetime.fromisoformat(str(cell))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _identity(cell: Any) -> Any:
    return cell


COLUMN_DECODERS: dict[str, Decoder] = {
    'json': decode_json,
    'datetime': decode_datetime,
    'bool': _decode_bool,
}


def cast_sql(ref: JsonRef, cast: str | None) -> tuple[Fragment, Decoder]:
    """A JSON value projected with a cast code (None: the decoded JSON value, keeping JSON types)."""
    if cast is None:
        return ref.json(), _decode_json_text
    if cast == 'j':
        return ref.json(), _decode_json_text
    if cast == 'f':
        return concat('CAST(', ref.extract(), ' AS REAL)'), _identity
    if cast == 'i':
        return concat('CAST(', ref.extract(), ' AS INTEGER)'), _identity
    if cast == 't':
        return concat('(CASE ', ref.type(), " WHEN 'text' THEN ", ref.extract(), ' ELSE ', ref.json(), ' END)'), _identity
    if cast == 'b':
        return concat('(CASE ', ref.type(), " WHEN 'true' THEN 1 WHEN 'false' THEN 0 WHEN 'integer' THEN ",
                      ref.extract(), " != 0 WHEN 'real' THEN ", ref.extract(), ' != 0 END)'), _decode_bool
    if cast == 'd':
        return ref.extract(), _decode_json_datetime
    raise InputValidationError(f'unknown cast {cast!r}; expected one of: {", ".join(sorted(CASTS))}')


@dataclass
class Projection:
    """One projected value: its output key, its SQL expressions, and ``decode(row, start)``, which turns the cells
    from ``row[start]`` on into the value; ``plain`` when that is the cell itself."""

    tag: str
    key: str
    sql: list[Fragment]
    decode: Callable[[tuple, int], Any]
    plain: bool = False


def _projection_entries(tag: str, spec: Any) -> list[tuple[str, dict]]:
    if spec in (None, []):
        return []
    if isinstance(spec, (str, dict)):
        spec = [spec]
    if not isinstance(spec, (list, tuple)):
        raise InputValidationError(f'the projections of tag {tag!r} must be a list, not {spec!r}')
    entries = []
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
                entries.append((key, options))
        else:
            raise InputValidationError(f'invalid projection {entry!r} of tag {tag!r}')
    return entries


def compile_projection(target: Target, key: str, options: dict, builder: Callable | None) -> Projection:
    """One projection (``*``, ``**``, a column, a JSON sub-path), with its ``func`` and ``cast``."""
    func, cast = options.get('func'), options.get('cast')
    if func is not None and func not in FUNCS:
        raise InputValidationError(f'unknown func {func!r} on {key!r} of tag {target.tag!r}; expected one of: {sorted(FUNCS)}')
    if cast is not None and cast not in CASTS:
        raise InputValidationError(f'unknown cast {cast!r} on {key!r} of tag {target.tag!r}; expected one of: {sorted(CASTS)}')
    if key == '*':
        if func is not None:
            raise InputValidationError(f'func {func!r} cannot be applied to "*" (tag {target.tag!r})')
        if builder is None or target.table is None or not target.orm_base or target.orm_base == 'link':
            raise InputValidationError(f'"*" cannot be projected on tag {target.tag!r}; project "**" or columns')
        names = list(target.table.column_names)
        sqls = [Fragment(target.column(name)[0]) for name in names]
        width = len(names)
        return Projection(target.tag, key, sqls, lambda row, i, n=names, b=builder, o=target.orm_base, w=width:
                          b(o, dict(zip(n, row[i:i + w]))))
    column_sql, kind, ref = resolve(target, key)
    if ref is not None and ref.path.params != ('$',) and cast is None and func is None:
        # Two cheap columns instead of the JSON text: json.loads per row costs more than the query itself.
        return Projection(target.tag, key, [ref.type(), ref.extract()], _decode_typed)
    if ref is not None and (ref.path.params != ('$',) or cast is not None):
        expression, decoder = cast_sql(ref, cast)
        if func is not None:
            expression = concat(func.upper(), '(', ref.extract() if cast in (None, 'j') else expression, ')')
            decoder = int if func == 'count' else (_identity if cast in (None, 'j') else decoder)
    else:
        expression, decoder = Fragment(column_sql), COLUMN_DECODERS.get(kind, _identity)
        if func is not None:
            expression = Fragment(f'{func.upper()}({column_sql})')
            decoder = int if func == 'count' else decoder
    if decoder is _identity:
        return Projection(target.tag, key, [expression], _cell, plain=True)
    return Projection(target.tag, key, [expression], lambda row, i, d=decoder: d(row[i]))


# --- ordering -----------------------------------------------------------------------------------------------------


_JSON_TYPE_RANK = ("(CASE {t} WHEN 'null' THEN 0 WHEN 'text' THEN 1 WHEN 'integer' THEN 2 WHEN 'real' THEN 2 "
                   "WHEN 'false' THEN 3 WHEN 'true' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 END)")


def order_terms(target: Target, key: str, options: Any) -> list[Fragment]:
    """ORDER BY terms for one field; NULLs last ascending and first descending, as PostgreSQL sorts."""
    if isinstance(options, str):
        options = {'order': options}
    if not isinstance(options, dict) or set(options) - {'order', 'cast'}:
        raise InputValidationError(f'order_by on {key!r} of tag {target.tag!r}: expected a dict with order and cast')
    order = options.get('order', 'asc')
    if order not in ('asc', 'desc'):
        raise InputValidationError(f'order {order!r} on {key!r} of tag {target.tag!r}; expected "asc" or "desc"')
    cast = options.get('cast')
    column_sql, kind, ref = resolve(target, key)
    suffix = ' ASC NULLS LAST' if order == 'asc' else ' DESC NULLS FIRST'
    if ref is None:
        return [Fragment(column_sql + suffix)]
    if cast is None or cast == 'j':
        rank = concat(*_split_rank(ref))
        return [concat(rank, suffix), concat(ref.extract(), suffix)]
    if cast == 'd':
        return [concat('julianday(', ref.extract(), ')', suffix)]
    expression, _ = cast_sql(ref, cast)
    return [concat(expression, suffix)]


def _split_rank(ref: JsonRef) -> list[Any]:
    before, after = _JSON_TYPE_RANK.split('{t}')
    return [before, ref.type(), after]


# --- the whole query ----------------------------------------------------------------------------------------------


@dataclass
class Compiled:
    """The compiled query: SQL text, parameters and the projections (for decoding rows)."""

    sql: str
    params: tuple
    projections: list[Projection]
    project_map: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        starts, start = [], 0
        for projection in self.projections:
            starts.append(start)
            start += len(projection.sql)
        self._plan = [(projection.decode, index) for projection, index in zip(self.projections, starts)]
        self._all_plain = all(projection.plain for projection in self.projections)

    def decode(self, row: tuple) -> list[Any]:
        """A result row -> the projected values in order."""
        if self._all_plain:
            return list(row)
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


def compile_query(qdict: dict, builder: Callable | None = None, count_only: bool = False) -> Compiled:
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
    where = and_([compile_filters(targets[tag], spec) for tag, spec in filters.items()
                  if spec and tag not in outer_tags])
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
    return Compiled(fragment.sql, fragment.params, projections, qdict.get('project_map') or {})


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
        for key, options in _projection_entries(tag, projects.get(tag)):
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
            ctes.append(joins_module.recursive_cte_sql(join, vertex.edge_alias, old.table.name, anchor.alias,
                                                       anchor_filter, with_path))
        vertex_on = edge_on = None
        if vertex.outer:
            vertex_on = compile_filters(targets[vertex.tag], filters.get(vertex.tag) or {})
            if vertex.edge_tag in targets:
                edge_on = compile_filters(targets[vertex.edge_tag], filters.get(vertex.edge_tag) or {})
        clauses.extend([' ', joins_module.join_sql(join, vertex.table.name, vertex.alias, old.alias,
                                                   vertex.edge_alias, vertex.outer, vertex_on, edge_on)])
    return ctes, concat(*clauses)


def _uses_path(edge_tag: str, filters: dict, projects: dict, order_by: Any) -> bool:
    mentioned = json.dumps([filters.get(edge_tag), projects.get(edge_tag), order_by], default=str)
    return '"path' in mentioned or '**' in mentioned
