"""Two storage objects on one folder in one process: a write that would wait for this thread's own write
transaction is refused at once with a clear error; writes from other threads still wait for their turn."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sqlitedos.exceptions import InvalidOperation
from sqlitedos.storage.sqlite_dos import SqliteDosStorage


@pytest.fixture
def two(tmp_path: Path):
    profile = SqliteDosStorage.create_profile('t', filepath=tmp_path / 'storage', default_user_email='me@lab.org')
    SqliteDosStorage.initialise(profile)
    first, second = SqliteDosStorage(profile), SqliteDosStorage(profile)
    yield first, second
    first.close()
    second.close()


def test_a_write_inside_the_other_storage_transaction_fails_at_once(two) -> None:
    first, second = two
    with first.transaction():
        first.set_global_variable('a', 1)
        start = time.monotonic()
        with pytest.raises(InvalidOperation, match='another storage object on the same database file'):
            second.set_global_variable('b', 2)
        assert time.monotonic() - start < 5  # SQLite's busy timeout is 60 s
        first.set_global_variable('c', 3)  # the first storage's transaction is still usable
    second.set_global_variable('b', 2)  # and once it is committed, the second one writes
    assert [second.get_global_variable(key) for key in 'abc'] == [1, 2, 3]


def test_a_write_from_another_thread_waits_for_its_turn(two) -> None:
    first, second = two
    outcome: list[object] = []

    def write_second() -> None:
        try:
            second.set_global_variable('b', 2)
            outcome.append('written')
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    with first.transaction():
        first.set_global_variable('a', 1)
        worker = threading.Thread(target=write_second)
        worker.start()
        time.sleep(0.3)
        assert outcome == []  # waiting for the first transaction, not refused
    worker.join(30)
    assert outcome == ['written']
    assert first.get_global_variable('b') == 2
