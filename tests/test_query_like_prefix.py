"""Prefix patterns (``'data.%'``) on text columns compile to a range; it must select exactly what LIKE selects."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlitedos.db import connect
from sqlitedos.query.operators import OPERATORS, like_prefix, like_to_regex

# Characters at the edges of the orderings involved: ASCII, wildcards and escapes, multi-byte UTF-8, the last code
# point before the surrogates and the last code point of all.
ALPHABET = st.sampled_from(
    ['a', 'b', 'A', '.', '%', '_', '\\', 'é', '\x7f', '\x80', '\ud7ff', '\ue000', '\uffff', '\U0010ffff', '\U0001f600']
)
TEXT = st.text(ALPHABET, max_size=5)


def escape(text: str) -> str:
    return text.replace('\\', '\\\\').replace('%', '\\%').replace('_', '\\_')


def test_like_prefix_reads_escapes() -> None:
    assert like_prefix('data.%') == 'data.'
    assert like_prefix('a\\%b%') == 'a%b'
    assert like_prefix('a\\\\%') == 'a\\'
    for pattern in ['%', 'a%b%', 'a_%', 'abc', 'x%%', 'a\\']:
        assert like_prefix(pattern) is None, pattern


def test_a_prefix_pattern_compiles_to_a_range() -> None:
    fragment = OPERATORS['like'].on_column('t0."node_type"', 'text', 'data.%')
    assert fragment.sql == '(t0."node_type" >= ? AND t0."node_type" < ?)'
    assert fragment.params == ('data.', 'data/')


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT, max_size=12), TEXT.filter(bool), st.booleans())
def test_range_selects_what_like_selects(values: list[str], prefix: str, literal_prefix: bool) -> None:
    pattern = (escape(prefix) if literal_prefix else prefix) + '%'
    connection = connect(':memory:')
    try:
        connection.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, label TEXT)')
        connection.executemany('INSERT INTO t (label) VALUES (?)', [(value,) for value in values])
        fragment = OPERATORS['like'].on_column('label', 'text', pattern)
        try:
            selected = [
                row[0]
                for row in connection.execute(f'SELECT label FROM t WHERE {fragment.sql} ORDER BY id', fragment.params)
            ]
        except (sqlite3.Error, UnicodeEncodeError):
            raise AssertionError(f'pattern {pattern!r} failed to run')
    finally:
        connection.close()
    regex = like_to_regex(pattern)
    assert selected == [value for value in values if regex.fullmatch(value)]
