"""Building a large result pauses Python's cyclic garbage collector (rows hold no cycles) and always resumes it."""

from __future__ import annotations

import gc
from unittest import mock

import pytest

from sqlitedos import EntityTypes, QueryBuilder
from sqlitedos.query.backend import RowReader


def query(storage) -> dict:
    user = storage.default_user.id
    rows = [{'node_type': 'data.core.dict.Dict.', 'user_id': user, 'attributes': {'name': f'n{i}'}} for i in range(50)]
    storage.bulk_insert(EntityTypes.NODE, rows, allow_defaults=True)
    qb = QueryBuilder(backend=storage).append(entity_type='data.core.dict.Dict.', tag='d', project=['attributes.name'])
    return qb.as_dict()


def test_rows_are_built_with_the_collector_paused(temp_storage) -> None:
    data = query(temp_storage)
    seen = []
    original = RowReader.rows

    def rows(self, cells):
        seen.append(gc.isenabled())
        return original(self, cells)

    assert gc.isenabled()
    with mock.patch.object(RowReader, 'rows', rows):
        got = temp_storage.query().all(data)
    assert seen == [False]
    assert gc.isenabled()
    assert sorted(row[0] for row in got) == sorted(f'n{i}' for i in range(50))


def test_the_collector_is_resumed_after_an_error_and_left_off_if_it_was_off(temp_storage) -> None:
    data = query(temp_storage)
    with mock.patch.object(RowReader, 'rows', side_effect=RuntimeError('decoding failed')):
        with pytest.raises(RuntimeError):
            temp_storage.query().all(data)
    assert gc.isenabled()
    gc.disable()
    try:
        assert len(temp_storage.query().all(data)) == 50
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()
