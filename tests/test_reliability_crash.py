"""A writer killed with SIGKILL at random moments (storing, packing, importing): every reported commit survives,
no half transaction is ever visible, and ``verify`` passes after each kill."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import reliability_workers as workers

from sqlitedos import QueryBuilder, SqliteDosStorage
from sqlitedos.archive import create_archive
from sqlitedos.verify import verify

WORKERS = Path(__file__).parent / 'reliability_workers.py'
#: (mode, kills): at least 30 in all, some while packing and some while importing.
ROUNDS = (('write', 16), ('maintain', 10), ('import', 6))
ARCHIVE_PAIRS = 60


def make_archives(folder: Path, count: int) -> list[tuple[Path, list[str]]]:
    """``count`` archives of distinct pairs, each with the data uuids it holds."""
    archives = []
    for index in range(count):
        profile = SqliteDosStorage.create_profile(
            f'a{index}', filepath=folder / f'source{index}', default_user_email=workers.EMAIL
        )
        SqliteDosStorage.initialise(profile)
        with SqliteDosStorage(profile) as source:
            uuids = [workers.store_pair(source, f'archive-{index}-{n}') for n in range(ARCHIVE_PAIRS)]
            path = folder / f'pairs{index}.aiida'
            create_archive(source, path)
        archives.append((path, uuids))
    return archives


def count_present(storage: Any, uuids: list[str]) -> int:
    if not uuids:
        return 0
    qb = QueryBuilder(backend=storage).append(entity_type='', orm_base='node', filters={'uuid': {'in': uuids}})
    return qb.count()


def kill_at_random(process: subprocess.Popen[str], mode: str, rng: random.Random) -> bool:
    """Kill the worker at a random moment of ``mode``'s critical phase; True if it was inside that phase."""
    assert process.stdout is not None
    assert process.stdout.readline().strip() == 'ready', process.stderr.read() if process.stderr else ''
    if mode == 'write':
        time.sleep(rng.uniform(0.0, 0.6))
    else:
        marker = process.stdout.readline().strip()
        assert marker == mode, marker
        time.sleep(rng.uniform(0.0, 0.5 if mode == 'import' else 0.02))
    process.send_signal(signal.SIGKILL)
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, errors
    return not rest.strip() if mode != 'write' else True


def check_after_kill(root: Path, logged: list[str], imported: list[tuple[list[str], int]]) -> None:
    with workers.open_storage(str(root)) as storage:
        report = verify(storage)
        assert report.ok, report.problems
        assert count_present(storage, logged) == len(logged)  # every reported commit is there
        assert workers.half_pairs(storage) == (0, 0)  # no pair without its link, no link without its pair
        for uuid in logged[-3:]:
            assert workers.check_data_node(storage, uuid) == []
        for uuids, _ in imported:
            assert count_present(storage, uuids) in (0, len(uuids))  # an import is all or nothing


@pytest.mark.slow
def test_sigkill_at_random_moments(dos_storage: Any, tmp_path: Path) -> None:
    root = dos_storage.filepath_root
    dos_storage.close()
    rng = random.Random(20261123)
    archives = make_archives(tmp_path, 6)
    log = tmp_path / 'committed.log'
    log.touch()
    imported: list[tuple[list[str], int]] = []
    inside = {mode: 0 for mode, _ in ROUNDS}
    kills = 0
    for mode, rounds in ROUNDS:
        for round_ in range(rounds):
            extra = [str(archives[round_][0])] if mode == 'import' else []
            if mode == 'import':
                imported.append((archives[round_][1], round_))
            process = subprocess.Popen(
                [sys.executable, str(WORKERS), mode, str(root), str(log), *extra],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            inside[mode] += kill_at_random(process, mode, rng)
            kills += 1
            check_after_kill(root, log.read_text().split(), imported)
    logged = log.read_text().split()
    with workers.open_storage(str(root)) as storage:
        complete = sum(count_present(storage, uuids) == len(uuids) for uuids, _ in imported)
        pairs = storage.nodes.count() // 2
        before = verify(storage)  # files of pairs killed before their commit: in the container, in no row
        assert before.ok, before.problems
        assert storage.maintain(full=True)['unreferenced_objects'] == len(before.unreferenced)
        after = verify(storage)
        assert after.ok, after.problems
        assert after.unreferenced == []  # full maintenance deleted exactly those, and no file a row needs
        for uuid in logged[-3:]:
            assert workers.check_data_node(storage, uuid) == []
    assert kills >= 30 and inside['maintain'] > 0 and inside['import'] > 0
    print(
        f'\n{kills} kills ({inside["maintain"]} inside packing, {inside["import"]} inside an import); '
        f'{len(logged)} logged commits, all present; {pairs} pairs stored; {complete}/{len(imported)} imports '
        'complete, the rest absent'
    )


def test_packing_after_a_packer_was_killed(dos_storage: Any) -> None:
    """A pack lock file left by a killed packer (disk-objectstore never removes it) does not stop later packing."""
    uuid = workers.store_pair(dos_storage, 'before')
    packs = dos_storage.filepath_container / 'packs'
    (packs / '0.lock').touch()
    dos_storage.maintain()
    assert not (packs / '0.lock').exists()
    assert dos_storage.get_repository().get_info()['Objects']['loose'] == 0
    assert workers.check_data_node(dos_storage, uuid) == []
