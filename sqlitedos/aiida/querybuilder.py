"""aiida's ``BackendQueryBuilder`` over ``storage.query()``: aiida's query dicts go to sqlitedos' compiler unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiida.orm.implementation import BackendQueryBuilder
from aiida.orm.utils.links import LinkQuadruple

from sqlitedos.aiida.entities import adopt
from sqlitedos.aiida.errors import translated_errors
from sqlitedos.storage.base import StorageBackend as SqlitedosStorageBackend

__all__ = ('SqlitedosQueryBuilder',)


def _without_empty_fields(spec: Any) -> Any:
    """A tag's filter spec without fields whose operator dict is empty: aiida reads ``{'mtime': {}}`` as no
    condition on ``mtime``. Logical keys (``and``, ``or``, ...) hold lists of such specs."""
    if not isinstance(spec, dict):
        return spec
    cleaned = {}
    for key, value in spec.items():
        if key in LOGICAL and isinstance(value, list):
            cleaned[key] = [_without_empty_fields(item) for item in value]
        elif value != {}:
            cleaned[key] = value
    return cleaned


def _has_empty_field(spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    return any(
        any(_has_empty_field(item) for item in value) if key in LOGICAL and isinstance(value, list) else value == {}
        for key, value in spec.items()
    )


def normalised(data: dict) -> dict:
    """aiida's query dict in the form sqlitedos' compiler takes (only empty operator dicts of a field differ)."""
    filters = data.get('filters')
    if not filters or not any(_has_empty_field(spec) for spec in filters.values()):
        return data
    return {**data, 'filters': {tag: _without_empty_fields(spec) for tag, spec in filters.items()}}


#: The columns a link's ``*`` stands for: aiida returns a ``LinkQuadruple`` of them.
LINK_COLUMNS = ('input_id', 'output_id', 'type', 'label')


def _is_star(entry: Any) -> bool:
    return entry == '*' or (isinstance(entry, dict) and list(entry) == ['*'])


def link_star_tags(data: dict) -> frozenset[str]:
    """The tags of links (link vertices and edges) on which the query projects ``*`` (a query projecting nothing
    projects ``*`` on its last vertex)."""
    project = data.get('project') or {}
    links = {item['tag'] for item in data['path'] if item.get('orm_base') == 'link'}
    links.update(item['edge_tag'] for item in data['path'] if item.get('edge_tag'))
    if not any(_entries(spec) for spec in project.values()):
        last = data['path'][-1]['tag']
        return frozenset({last} & links)
    return frozenset(tag for tag in links if any(_is_star(entry) for entry in _entries(project.get(tag))))


def _entries(spec: Any) -> list[Any]:
    if spec in (None, []):
        return []
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def with_link_columns(data: dict, tags: frozenset[str]) -> dict:
    """``data`` with each link ``*`` projection of ``tags`` replaced by the link's four columns."""
    project = dict(data.get('project') or {})
    for tag in tags:
        entries: list[Any] = []
        for entry in _entries(project.get(tag)) or ['*']:
            entries.extend({name: {}} for name in LINK_COLUMNS) if _is_star(entry) else entries.append(entry)
        project[tag] = entries
    return {**data, 'project': project}


def _quadruples(row: dict[str, dict[str, Any]], tags: frozenset[str]) -> dict[str, dict[str, Any]]:
    for tag in tags:
        values = row[tag]
        quadruple = LinkQuadruple(*(values.pop(name) for name in LINK_COLUMNS))
        row[tag] = {'*': quadruple, **values}
    return row


#: Keys of a filter spec that combine conditions rather than name a field.
LOGICAL = frozenset({'and', 'or', '~and', '~or', '!and', '!or'})


def _adopt_row(row: list[Any]) -> list[Any]:
    for index, value in enumerate(row):
        if hasattr(value, '_backend'):
            row[index] = adopt(value)
    return row


class SqlitedosQueryBuilder(BackendQueryBuilder):
    """Runs aiida's query dicts with sqlitedos' query object; projected entities are the plugin's entity classes."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        # aiida's own answers for outer joins with filters: its tests and its users' code rely on them
        self._query = SqlitedosStorageBackend.query(backend, outer_filters_in_where=True)

    def count(self, data: dict) -> int:
        data = normalised(data)
        tags = link_star_tags(data)
        with translated_errors():
            return self._query.count(with_link_columns(data, tags) if tags else data)

    def first(self, data: dict) -> list[Any] | None:
        data = normalised(data)
        if link_star_tags(data):
            return next(iter(self.iterall({**data, 'limit': 1})), None)
        with translated_errors():
            row = self._query.first(data)
        return None if row is None else _adopt_row(row)

    def iterall(self, data: dict, batch_size: int | None = None) -> Iterator[list[Any]]:
        """The rows, inside a transaction (unless one is open): writes made while iterating commit together at the
        end, or are rolled back if the iteration is abandoned (as with aiida's own backends)."""
        data = normalised(data)
        tags = link_star_tags(data)
        if tags:
            # Rows by tag (``iterdict``), each link's four columns folded into one value, in ``iterall``'s order.
            for row in self.iterdict(data, batch_size):
                yield [value for values in row.values() for value in values.values()]
            return
        with translated_errors():
            for row in self._backend._iterate(self._query.iterall(data, batch_size)):
                yield _adopt_row(row)

    def iterdict(self, data: dict, batch_size: int | None = None) -> Iterator[dict[str, dict[str, Any]]]:
        data = normalised(data)
        tags = link_star_tags(data)
        if tags:
            data = with_link_columns(data, tags)
        with translated_errors():
            for row in self._backend._iterate(self._query.iterdict(data, batch_size)):
                if tags:
                    row = _quadruples(row, tags)
                for values in row.values():
                    for key, value in values.items():
                        if hasattr(value, '_backend'):
                            values[key] = adopt(value)
                yield row

    def all(self, data: dict) -> list[list[Any]]:
        """Every row at once (sqlitedos' own API; aiida's front end uses ``iterall``)."""
        return list(self.iterall(data))

    def as_sql(self, data: dict, inline: bool = False) -> str:
        with translated_errors():
            return self._query.as_sql(normalised(data), inline=inline)

    def analyze_query(self, data: dict, execute: bool = True, verbose: bool = False) -> str:
        with translated_errors():
            return self._query.analyze_query(normalised(data), execute=execute, verbose=verbose)

    def get_creation_statistics(self, user_pk: int | None = None) -> dict[str, Any]:
        with translated_errors():
            return self._query.get_creation_statistics(user_pk)
