"""No code in ``sqlitedos/query/`` searches or edits compiled SQL text: SQL is built from fragments, with flags set
while compiling. Rendering SQL with its values for display (``render_inline``, behind ``as_sql(inline=True)``) is
the one exemption."""

from __future__ import annotations

import ast
import re
from pathlib import Path

QUERY = Path(__file__).resolve().parent.parent / 'sqlitedos' / 'query'
#: Functions allowed to work on SQL text: display only, never run.
EXEMPT = {'render_inline'}
STRING_METHODS = {
    'replace',
    'count',
    'find',
    'rfind',
    'index',
    'split',
    'rsplit',
    'partition',
    'startswith',
    'endswith',
}


def _mentions_sql(node: ast.AST) -> bool:
    """True if the expression is SQL text by its name (``sql``, ``x.sql``, ``table_sql``, ``compiled.sql``) or an
    ``UPPER_SNAKE`` constant (the house style's SQL statements)."""
    text = ast.unparse(node)
    return bool(re.search(r'(^|[._])sql($|[._])', text, re.IGNORECASE) or re.fullmatch(r'[A-Z][A-Z0-9_]+', text))


def _is_constant_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id.isupper() and 'SQL' not in node.id


def sql_text_operations(source: str) -> list[str]:
    """Every string search or edit on an SQL-named expression outside ``EXEMPT`` functions, as source lines."""
    tree = ast.parse(source)
    exempt = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in EXEMPT
        for child in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in STRING_METHODS:
            if _mentions_sql(node.func.value):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if any(_mentions_sql(right) and not _is_constant_name(right) for right in node.comparators):
                found.append(ast.unparse(node))
    return found


def test_no_string_operation_on_compiled_sql() -> None:
    offences = {}
    for path in sorted(QUERY.glob('*.py')):
        source = path.read_text('utf-8')
        found = sql_text_operations(source)
        # The plain grep as well, for forms the parse above could miss.
        found += [line.strip() for line in source.splitlines() if re.search(r' in (\w+\.)?sql\b', line)]
        if found:
            offences[path.name] = found
    assert offences == {}


def test_the_check_finds_what_it_looks_for() -> None:
    """The patterns the query layer once had are found (so the test above can fail)."""
    old = (
        'if fragment.sql.count(table_sql) != 1:\n    pass\n'
        "walk = fragment.sql.replace(table_sql, table_sql + ' NOT INDEXED')\n"
        "if 'sqlitedos_json_equal' in sql:\n    pass\n"
        "types = CREATION_TYPES.replace(' GROUP', where + ' GROUP')\n"
        "def render_inline(sql, params):\n    return sql.split('?')\n"
        "label = value.replace('%', '')\n"
    )
    assert sorted(sql_text_operations(old)) == sorted(
        [
            'fragment.sql.count(table_sql)',
            "fragment.sql.replace(table_sql, table_sql + ' NOT INDEXED')",
            "'sqlitedos_json_equal' in sql",
            "CREATION_TYPES.replace(' GROUP', where + ' GROUP')",
        ]
    )
