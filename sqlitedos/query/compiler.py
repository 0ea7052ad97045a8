"""A parsed query (``parse.py``) in; SQL, parameters and the compiled projections out.

The stages are functions: ``parse_query`` (every check), ``compile_query`` (SQL from whitelisted identifiers and
generated aliases, every value a ``?`` parameter), execution and row decoding (``backend.py``). The compiler writes
one statement into a ``Context``, which collects its fragments and the flags that decide how it is written (the
primary-key walk, which recursive edges carry paths or depths); no compiled SQL is ever searched or edited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlitedos.db import Fragment
from sqlitedos.query import joins as joins_module
from sqlitedos.query.operators import Part, join_fragments
from sqlitedos.query.parse import Combination, Comparison, Filter, ParsedQuery, Vertex, parse_query
from sqlitedos.query.projections import Projection, compile_projection, order_terms
from sqlitedos.tables import quote_identifier

__all__ = ('Compiled', 'Context', 'LinkScan', 'PkWalk', 'compile_filter', 'compile_query')

#: Filter keys that no index serves: a walk in primary-key order is never slowed by an index they would have used.
_UNINDEXED_COLUMNS = frozenset({'attributes', 'extras'})
#: The node columns an ordered walk can follow, and the index it walks (``None``: the primary key, ``NOT INDEXED``).
#: The names are aiida's schema's (``schema/main_0001_initial.sql``); both columns are NOT NULL.
WALK_INDEXES: dict[str, str | None] = {
    'id': None,
    'ctime': 'ix_db_dbnode_db_dbnode_ctime',
    'mtime': 'ix_db_dbnode_db_dbnode_mtime',
}


# --- filters ------------------------------------------------------------------------------------------------------


def compile_filter(node: Filter | None, alias: str, no_type_index: bool = False) -> Fragment:
    """The SQL condition of a parsed filter on the vertex or edge under ``alias`` (``1`` when there is none).

    With ``no_type_index`` the ``node_type`` comparisons are written on ``+column`` (the same value), which keeps
    SQLite from answering them with the type index: the link scan of ``LinkScan``.
    """
    if node is None:
        return Fragment('1')
    if isinstance(node, Comparison):
        operator, field_ = node.operator, node.field
        if field_.is_json:
            assert operator.on_json is not None
            fragment = operator.on_json(field_.ref(alias), node.value)
        else:
            assert operator.on_column is not None
            column = field_.column_sql(alias)
            if no_type_index and field_.column == 'node_type':
                column = f'+{column}'
            fragment = operator.on_column(column, field_.kind, node.value)
    elif not node.parts:
        fragment = Fragment('1')
    elif len(node.parts) == 1 and not node.negate:
        return compile_filter(node.parts[0], alias, no_type_index)
    else:
        parts = [compile_filter(part, alias, no_type_index) for part in node.parts]
        fragment = join_fragments(parts, f' {node.glue} ', parens=True)
    return join_fragments(['NOT ', fragment]) if node.negate else fragment


# --- the compiled query -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PkWalk:
    """A query's walk in the order it asks for (``sql``, same parameters) and the probe that decides when to use it.

    ``index`` is the index walked: None for the primary key (``ORDER BY id``), else the ``ctime``/``mtime`` index.
    """

    sql: str
    probe: Fragment
    rows_needed: int
    index: str | None = None
    #: Counts the type's nodes among the first ``?`` rows of the walk (the bound is the first parameter).
    prefix_probe: Fragment = Fragment('')


@dataclass(frozen=True)
class LinkScan:
    """Two typed node vertices joined by a link, as a scan of the links (``sql``, same parameters), and the probe
    counting (up to a bound, the last parameter) the nodes of the type at the link's input end on the type index."""

    sql: str
    probe: Fragment


@dataclass(frozen=True)
class Compiled:
    """The compiled query: SQL text, parameters, and the projections whose cells each row holds, in order;
    ``count_sql`` counts its rows (same parameters)."""

    sql: str
    params: tuple
    projections: tuple[Projection, ...]
    project_map: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    pk_walk: PkWalk | None = None
    count_sql: str = ''
    link_scan: LinkScan | None = None


@dataclass
class Context:
    """Collects one statement: its fragments in order, and the flags that decide how parts of it are written.

    ``not_indexed``: the first table is read in primary-key order (``NOT INDEXED``), the walk of ``PkWalk``.
    ``indexed_by``: the first table is read through that index (``INDEXED BY``, a name of ``WALK_INDEXES``), the
    walk of ``PkWalk`` in ``ctime``/``mtime`` order.
    ``recursive``: for each recursive vertex index, what its edge carries (``joins.RecursiveColumns``).
    ``outer_filters_in_where``: the filters of an outer-joined vertex go into ``WHERE``, as aiida-core writes them
    (unmatched rows then fail them), not into its ``ON`` clause (docs/query-semantics.md, the aiida plugin).
    """

    not_indexed: bool = False
    outer_filters_in_where: bool = False
    indexed_by: str | None = None
    #: The tags whose ``node_type`` filters are kept off the type index (``compile_filter(no_type_index=True)``).
    no_type_index: frozenset[str] = frozenset()
    recursive: dict[int, joins_module.RecursiveColumns] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)

    def add(self, *parts: Part) -> Context:
        self.parts.extend(parts)
        return self

    def add_list(self, parts: list[Fragment], glue: str = ', ') -> Context:
        self.parts.append(join_fragments(parts, glue))
        return self

    def render(self) -> Fragment:
        return join_fragments(self.parts)


def _recursive_columns(query: ParsedQuery, vertex: Vertex) -> joins_module.RecursiveColumns:
    """What a recursive edge must carry: paths only when asked for (they multiply rows), depth when used."""
    assert vertex.edge_tag is not None
    if query.mentions(vertex.edge_tag, 'path'):
        return joins_module.RecursiveColumns.PATHS
    if query.mentions(vertex.edge_tag, 'depth'):
        return joins_module.RecursiveColumns.DEPTH
    return joins_module.RecursiveColumns.NODES


def compile_query(query: ParsedQuery | dict, *, outer_filters_in_where: bool = False) -> Compiled:
    """Compile a parsed query (or parse and compile a query dict); ``outer_filters_in_where``: see ``Context``."""
    parsed = query if isinstance(query, ParsedQuery) else parse_query(query)
    recursive = {
        vertex.index: _recursive_columns(parsed, vertex)
        for vertex in parsed.vertices
        if vertex.join is not None and vertex.join.kind == 'recursive'
    }
    projections = tuple(compile_projection(spec, _alias_of(parsed, spec.tag)) for spec in parsed.projections)
    statement = _write_statement(
        parsed, projections, Context(recursive=recursive, outer_filters_in_where=outer_filters_in_where)
    )
    return Compiled(
        statement.sql,
        statement.params,
        projections,
        parsed.project_map or {},
        _pk_walk(parsed, projections, recursive),
        join_fragments(['SELECT COUNT(*) FROM (', statement, ')']).sql,
        _link_scan(parsed, projections, recursive),
    )


def _alias_of(query: ParsedQuery, tag: str) -> str:
    for vertex in query.vertices:
        if vertex.tag == tag:
            return vertex.alias
        if vertex.edge_tag == tag:
            return vertex.edge_alias
    raise AssertionError(tag)  # the parser checked every tag


def _write_statement(query: ParsedQuery, projections: tuple[Projection, ...], ctx: Context) -> Fragment:
    ctes, from_clause = _from_clause(query, ctx)
    outer_tags = {
        tag
        for vertex in query.vertices
        if vertex.outer and not ctx.outer_filters_in_where
        for tag in (vertex.tag, vertex.edge_tag)
    }
    where = [
        compile_filter(node, _alias_of(query, tag), tag in ctx.no_type_index)
        for tag, node in query.filters.items()
        if tag not in outer_tags
    ]
    order = [term for spec in query.order for term in order_terms(spec, _alias_of(query, spec.tag))]
    if ctes:
        ctx.add('WITH RECURSIVE ').add_list(ctes).add(' ')
    ctx.add('SELECT DISTINCT ' if query.distinct else 'SELECT ')
    ctx.add_list([cell for projection in projections for cell in projection.cells])
    ctx.add(' ', from_clause)
    if where:
        ctx.add(' WHERE ').add_list(where, ' AND ')
    if order:
        ctx.add(' ORDER BY ').add_list(order)
    if query.limit is not None or query.offset is not None:
        ctx.add(Fragment(' LIMIT ? OFFSET ?', (-1 if query.limit is None else query.limit, query.offset or 0)))
    return ctx.render()


def _from_clause(query: ParsedQuery, ctx: Context) -> tuple[list[Fragment], Fragment]:
    first = query.vertices[0]
    hint = ' NOT INDEXED' if ctx.not_indexed else ''
    if ctx.indexed_by is not None:
        assert ctx.indexed_by in WALK_INDEXES.values()
        hint = f' INDEXED BY {ctx.indexed_by}'
    ctes: list[Fragment] = []
    clauses: list[Part] = [f'FROM {quote_identifier(first.table.name)} AS {first.alias}{hint}']
    for vertex in query.vertices[1:]:
        old = query.vertices[vertex.joined_to]
        join = vertex.join
        assert join is not None and vertex.edge_tag is not None
        if join.kind == 'recursive':
            anchor_alias = f'a{vertex.index}'
            ctes.append(
                joins_module.recursive_cte_sql(
                    join,
                    vertex.edge_alias,
                    old.table.name,
                    anchor_alias,
                    compile_filter(query.filters.get(old.tag), anchor_alias),
                    ctx.recursive[vertex.index],
                    _depth_bound(query.filters.get(vertex.edge_tag)),
                )
            )
        vertex_on = edge_on = None
        if vertex.outer and not ctx.outer_filters_in_where:
            vertex_on = _optional_filter(query.filters.get(vertex.tag), vertex.alias)
            if vertex.edge_has_columns:
                edge_on = _optional_filter(query.filters.get(vertex.edge_tag), vertex.edge_alias)
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
    return ctes, join_fragments(clauses)


def _optional_filter(node: Filter | None, alias: str) -> Fragment | None:
    return None if node is None else compile_filter(node, alias)


def _depth_bound(node: Filter | None) -> int | None:
    """The largest depth a recursive edge's own filters allow (``depth < n``/``<= n``/``== n`` ANDed at the top),
    so the recursion stops there; None if they do not bound it."""
    if node is None:
        return None
    parts = node.parts if isinstance(node, Combination) and node.glue == 'AND' and not node.negate else (node,)
    bounds = []
    for part in parts:
        if not isinstance(part, Comparison) or part.negate or part.field.column != 'depth' or part.field.path:
            continue
        value = part.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = part.operator.name
        if name in ('<',):
            bounds.append(int(-(-value // 1)) - 1)  # the largest integer below value
        elif name in ('<=', '=<', '=='):
            bounds.append(int(value // 1))
    return min(bounds) if bounds else None


def _single_column(node: Filter | None) -> str | None:
    """The column every comparison of ``node`` is on, or None if there are several (or none)."""
    if isinstance(node, Comparison):
        return node.field.column
    if node is None or not node.parts:
        return None
    columns = {_single_column(part) for part in node.parts}
    return columns.pop() if len(columns) == 1 else None


def _pk_walk(
    query: ParsedQuery, projections: tuple[Projection, ...], recursive: dict[int, joins_module.RecursiveColumns]
) -> PkWalk | None:
    """The alternative plan for "the newest (or oldest) N nodes of a type": walk the order asked for, no type index.

    SQLite estimates a ``node_type`` range to be selective and so sorts every node of the type to return N of them;
    when the type is common, walking ids (``ORDER BY id``: the primary key, ``NOT INDEXED``) or the ``ctime`` or
    ``mtime`` index (``INDEXED BY``) in order and stopping after N matches is far cheaper. The choice needs the data
    (how common the type is), so it is made when the query runs (``QueryBackend``), with the probe given here.
    """
    if len(query.vertices) != 1 or query.limit is None or query.vertices[0].table.name != 'db_dbnode':
        return None
    vertex = query.vertices[0]
    if len(query.order) != 1:
        return None
    term = query.order[0]
    if term.field.column not in WALK_INDEXES or term.field.path or term.cast is not None:
        return None
    type_filter = _type_filter(query.filters.get(vertex.tag))
    if type_filter is None:
        return None
    probe = compile_filter(type_filter, vertex.alias)
    table = f'FROM {quote_identifier(vertex.table.name)} AS {vertex.alias}'
    index = WALK_INDEXES[term.field.column]
    ctx = Context(not_indexed=index is None, indexed_by=index, recursive=recursive)
    walk = _write_statement(query, projections, ctx)
    hint = ' NOT INDEXED' if index is None else f' INDEXED BY {index}'
    prefix: list[Part] = [
        f'SELECT count(*) FROM (SELECT {vertex.alias}.{quote_identifier("node_type")} {table}{hint} ORDER BY ',
        *order_terms(term, vertex.alias),
        f' LIMIT ?) AS {vertex.alias} WHERE ',
        probe,
    ]
    return PkWalk(
        sql=walk.sql,
        probe=join_fragments([f'SELECT count(*) FROM (SELECT 1 {table} WHERE ', probe, ' LIMIT ?)']),
        rows_needed=query.limit + (query.offset or 0),
        index=index,
        prefix_probe=join_fragments(prefix),
    )


def _type_filter(node: Filter | None) -> Filter | None:
    """The ``node_type`` part of a vertex's filter if every other part is on unindexed columns, else None."""
    parts = node.parts if isinstance(node, Combination) and node.glue == 'AND' and not node.negate else (node,)
    columns = [_single_column(part) for part in parts]
    if 'node_type' not in columns or not all(
        column == 'node_type' or column in _UNINDEXED_COLUMNS for column in columns
    ):
        return None
    type_filters = [part for part, column in zip(parts, columns) if column == 'node_type' and part is not None]
    return type_filters[0] if len(type_filters) == 1 else Combination('AND', tuple(type_filters))


def _link_scan(
    query: ParsedQuery, projections: tuple[Projection, ...], recursive: dict[int, joins_module.RecursiveColumns]
) -> LinkScan | None:
    """The alternative plan for "every link between nodes of two types" (all calculation inputs, say): scan links.

    SQLite starts such a join from one type on the type index, then finds each node's links and the node at the
    other end: three lookups per node of that type. It starts from the input end (with the statistics ``PRAGMA
    optimize`` writes, ``input_id`` is the more selective link index); when that type is common, scanning the links
    and looking up both ends is cheaper. The choice needs the data, so it is made when the query runs
    (``QueryBackend``).
    """
    if len(query.vertices) != 2 or query.order or query.limit is not None or query.offset is not None:
        return None
    first, second = query.vertices
    join = second.join
    if join is None or join.kind != 'link' or second.outer or second.joined_to != 0:
        return None
    if first.table.name != 'db_dbnode' or second.table.name != 'db_dbnode' or second.edge_tag in query.filters:
        return None
    type_filters = [_type_filter(query.filters.get(vertex.tag)) for vertex in query.vertices]
    if any(type_filter is None for type_filter in type_filters):
        return None
    input_end = 0 if join.edge_old == 'input_id' else 1
    vertex = query.vertices[input_end]
    probe = join_fragments(
        [
            f'SELECT count(*) FROM (SELECT 1 FROM {quote_identifier(vertex.table.name)} AS {vertex.alias} WHERE ',
            compile_filter(type_filters[input_end], vertex.alias),
            ' LIMIT ?)',
        ]
    )
    ctx = Context(recursive=recursive, no_type_index=frozenset({first.tag, second.tag}))
    return LinkScan(_write_statement(query, projections, ctx).sql, probe)
