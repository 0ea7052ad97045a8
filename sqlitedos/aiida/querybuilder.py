"""aiida's ``BackendQueryBuilder`` over ``storage.query()``: aiida's query dicts go to sqlitedos' compiler unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiida.orm.implementation import BackendQueryBuilder

from sqlitedos.aiida.entities import adopt
from sqlitedos.aiida.errors import translated_errors
from sqlitedos.storage.base import StorageBackend as SqlitedosStorageBackend

__all__ = ('SqlitedosQueryBuilder',)


def _adopt_row(row: list[Any]) -> list[Any]:
    for index, value in enumerate(row):
        if hasattr(value, '_backend'):
            row[index] = adopt(value)
    return row


class SqlitedosQueryBuilder(BackendQueryBuilder):
    """Runs aiida's query dicts with sqlitedos' query object; projected entities are the plugin's entity classes."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._query = SqlitedosStorageBackend.query(backend)

    def count(self, data: dict) -> int:
        with translated_errors():
            return self._query.count(data)

    def first(self, data: dict) -> list[Any] | None:
        with translated_errors():
            row = self._query.first(data)
        return None if row is None else _adopt_row(row)

    def iterall(self, data: dict, batch_size: int | None = None) -> Iterator[list[Any]]:
        with translated_errors():
            for row in self._query.iterall(data, batch_size):
                yield _adopt_row(row)

    def iterdict(self, data: dict, batch_size: int | None = None) -> Iterator[dict[str, dict[str, Any]]]:
        with translated_errors():
            for row in self._query.iterdict(data, batch_size):
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
            return self._query.as_sql(data, inline=inline)

    def analyze_query(self, data: dict, execute: bool = True, verbose: bool = False) -> str:
        with translated_errors():
            return self._query.analyze_query(data, execute=execute, verbose=verbose)

    def get_creation_statistics(self, user_pk: int | None = None) -> dict[str, Any]:
        with translated_errors():
            return self._query.get_creation_statistics(user_pk)
