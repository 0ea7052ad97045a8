"""Power cuts at seeded points of real writes, packing, archive imports and backups (``crashfs`` under FUSE).

Each cut's durable state is checked twice (``posix``: only what was synced; ``journal``: every directory operation,
but file data only as synced) for what ``docs/reliability.md`` promises after an OS crash:

- the storage opens, ``verify`` passes (unreferenced objects allowed), and live and full maintenance run again;
- every stored pair is whole (its ``create`` link, its files byte for byte), and no half pair is visible;
- acknowledged commits are lost only as a suffix, and never one made before the WAL's last fsync (a checkpoint);
- an import is all or nothing, and imports are lost only as a suffix;
- every ``backup_*`` folder is a complete storage, ``last-backup`` names one, and no backup that returned is lost.

The normal suite runs a few cuts per workload. ``make crashtest`` sets ``SQLITEDOS_CRASH_FULL=1``: at least 200 cuts
in all, and FUSE missing is a failure there, not a skip. ``SQLITEDOS_CRASH_SEED`` changes the seed (default fixed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import crash_harness as harness
import pytest

FULL = bool(os.environ.get('SQLITEDOS_CRASH_FULL'))
SEED = int(os.environ.get('SQLITEDOS_CRASH_SEED', '20261202'))

#: mode: (pairs or archives, mean operations between cuts, cuts at least) for the quick run and the full one.
WORKLOADS: dict[str, dict[bool, tuple[int, int, int]]] = {
    'write': {False: (12, 150, 3), True: (120, 140, 50)},
    'pack': {False: (12, 150, 3), True: (120, 150, 50)},
    'import': {False: (3, 120, 3), True: (16, 60, 50)},
    'backup': {False: (9, 200, 3), True: (75, 220, 50)},
}
#: Pairs between a close and reopen (a checkpoint): often in the quick run, so its few cuts see durable commits.
REOPEN = {False: 3, True: 10}
ARCHIVE_PAIRS = 8


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def write(path: Path, content: bytes, sync: bool) -> None:
    with open(path, 'ab') as handle:
        handle.write(content)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def sync_folder(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(descriptor)
    os.close(descriptor)


def test_crashfs_keeps_only_what_was_synced(tmp_path: Path) -> None:
    """The harness itself: after a cut, unsynced data is gone, and unsynced names are gone (posix) or kept (journal)."""
    unusable = harness.fuse_unusable()
    if unusable:
        (pytest.fail if FULL else pytest.skip)(f'crashfs needs FUSE: {unusable}')
    backing, mount = tmp_path / 'backing', tmp_path / 'mnt'
    (backing / 'root').mkdir(parents=True)
    (backing / 'root' / 'old.txt').write_bytes(b'old')  # there before the mount: durable
    (backing / 'root' / 'gone.txt').write_bytes(b'gone')
    (backing / 'root' / 'sparse.txt').write_bytes(b'0123456789')
    with harness.mounted(backing, mount, tmp_path / 'cuts', 1, 10**9, tmp_path / 'acks.txt'):
        write(mount / 'synced.txt', b'kept', sync=True)
        write(mount / 'unsynced.txt', b'lost', sync=False)
        sync_folder(mount)  # both names durable now
        write(mount / 'synced.txt', b'+more', sync=False)
        write(mount / 'late.txt', b'late', sync=True)  # data synced, name not
        (mount / 'old.txt').write_bytes(b'new')  # O_TRUNC, then a write, neither synced
        descriptor = os.open(mount / 'sparse.txt', os.O_WRONLY | os.O_TRUNC)
        os.pwrite(descriptor, b'x', 5)  # beyond the truncation: a hole of zeros, then synced
        os.fsync(descriptor)
        os.close(descriptor)
        os.rename(mount / 'old.txt', mount / 'renamed.txt')
        os.unlink(mount / 'gone.txt')
        os.link(mount / 'synced.txt', mount / 'hard.txt')
        (mount / 'sub').mkdir()
        write(mount / 'sub' / 'f', b'f', sync=True)
        sync_folder(mount / 'sub')  # its entry in the root is not synced
        assert (mount / 'synced.txt').read_bytes() == b'kept+more'  # what programs see: everything
        (mount / harness.CUT_NOW).mkdir()
    cut = tmp_path / 'cuts' / 'cut0000'
    sparse = b'\0\0\0\0\0x'
    assert tree(cut / 'posix') == {
        'old.txt': b'old',
        'gone.txt': b'gone',
        'sparse.txt': sparse,
        'synced.txt': b'kept',
        'unsynced.txt': b'',
    }
    assert tree(cut / 'journal') == {
        'renamed.txt': b'old',  # the durable data of old.txt's inode: its rewrite was never synced
        'synced.txt': b'kept',
        'hard.txt': b'kept',
        'unsynced.txt': b'',
        'late.txt': b'late',
        'sub/f': b'f',
        'sparse.txt': sparse,
    }
    assert os.path.samefile(cut / 'journal' / 'synced.txt', cut / 'journal' / 'hard.txt')


def archives_for(folder: Path, count: int) -> tuple[list[Any], list[list[str]]]:
    made = harness.make_archives(folder, count, ARCHIVE_PAIRS)
    return [str(path) for path, _ in made], [uuids for _, uuids in made]


@pytest.mark.parametrize(
    'mode',
    ['write', 'pack', 'import', 'backup'],
)
def test_power_cuts(mode: str, tmp_path: Path) -> None:
    unusable = harness.fuse_unusable()
    if unusable:
        (pytest.fail if FULL else pytest.skip)(f'crashfs needs FUSE: {unusable}')
    size, mean_gap, minimum = WORKLOADS[mode][FULL]
    seed = SEED + sorted(WORKLOADS).index(mode)
    args, archives = archives_for(tmp_path / 'archives', size) if mode == 'import' else ([size, REOPEN[FULL]], [])
    run = harness.run_workload(tmp_path / 'run', mode, args, seed, mean_gap, archives)
    assert len(run.cuts) >= minimum, f'only {len(run.cuts)} cuts: lower the mean gap'
    figures: list[dict[str, Any]] = []
    failures: list[str] = []
    for record in run.cuts:
        failed = len(failures)
        for variant in harness.VARIANTS:
            try:
                figures.append(harness.check_cut(run, record, variant))
            except Exception as exc:  # noqa: BLE001 - every broken promise is a finding; all are reported
                failures.append(f'cut {record["cut"]} at op {record["op"]} ({record["what"]}), {variant}: {exc!r}')
        if len(failures) == failed:  # keep only the states that broke a promise, for a person to look at
            shutil.rmtree(run.folder / 'cuts' / record['folder'])
    summary = summarise(mode, seed, run, figures, failures)
    print(f'\n{mode}: {json.dumps(summary)}')
    if os.environ.get('SQLITEDOS_CRASH_REPORT'):
        with open(os.environ['SQLITEDOS_CRASH_REPORT'], 'a', encoding='utf-8') as report:
            report.write(json.dumps(summary) + '\n')
    assert not failures, f'{len(failures)} of {2 * len(run.cuts)} checks failed:\n' + '\n'.join(failures[:8])
    assert_exercised(mode, run, figures)


def summarise(mode: str, seed: int, run: harness.Run, figures: list[dict[str, Any]], failures: list[str]) -> dict:
    """The figures ``docs/reliability.md`` quotes for one workload."""
    inside = {'pack': '/packs', 'backup': f'/{harness.BACKUPS}/', 'import': '/packs'}.get(mode)
    return {
        'mode': mode,
        'seed': seed,
        'operations': run.cuts[-1]['op'] if run.cuts else 0,
        'cuts': len(run.cuts),
        'checks': 2 * len(run.cuts),
        'failed': len(failures),
        'cuts_inside': sum(inside in record['what'] for record in run.cuts) if inside else None,
        'acknowledged': len(run.acks),
        'most_lost': max((f['lost'] for f in figures), default=0),
        'cuts_losing_commits': sum(f['lost'] > 0 for f in figures if f['variant'] == 'posix'),
        'most_kept_by_sync': max((f['durable'] for f in figures), default=0),
        'most_imports_lost': max((f.get('imports_lost', 0) for f in figures), default=0),
        'most_imports_kept_by_sync': max((f.get('imports_durable', 0) for f in figures), default=0),
        'most_backups_in_place': max((f.get('backups_in_place', 0) for f in figures), default=0),
    }


def assert_exercised(mode: str, run: harness.Run, figures: list[dict[str, Any]]) -> None:
    """The run reached what it is meant to test: kept commits, cut packing, imports and backups."""
    if mode in ('write', 'pack', 'backup'):
        assert any(f['durable'] > 0 for f in figures), 'no cut came after a checkpoint: nothing durable to check'
    if mode == 'import':
        assert any(f['imports_acked'] > 0 for f in figures), 'no cut came after an import'
    if mode == 'backup':
        assert any(f['backups_in_place'] > 0 for f in figures), 'no cut came after a backup'
    if FULL and mode in ('pack', 'backup'):
        inside = '/packs' if mode == 'pack' else f'/{harness.BACKUPS}/'
        assert any(inside in record['what'] for record in run.cuts), f'no cut landed inside {mode}ing'
