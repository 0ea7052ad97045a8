"""Power cuts, simulated: run a workload on ``crashfs``, then check the durable state photographed at each cut.

Used by ``tests/test_crash_consistency.py`` (a few cuts, in the normal suite) and by ``make crashtest`` (the same
test with ``SQLITEDOS_CRASH_FULL=1``: at least 200 cuts). Not collected by pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import reliability_workers as workers

from sqlitedos import QueryBuilder, SqliteDosStorage
from sqlitedos.verify import verify

HERE = Path(__file__).resolve().parent
CRASHFS = HERE / 'crashfs.py'
CUT_NOW = '.crashfs-cut'  # crashfs.CUT_NOW (crashfs imports mfusepy, which needs libfuse)
WORKLOAD = HERE / 'crash_workload.py'
STORAGE = 'storage'
BACKUPS = 'backups'
VARIANTS = ('posix', 'journal')
DATABASE = 'database.sqlite'
WAL = DATABASE + '-wal'
MOUNT_TIMEOUT = 20.0


def fuse_unusable() -> str | None:
    """Why FUSE cannot be used here (None: it can)."""
    if not os.path.exists('/dev/fuse'):
        return 'no /dev/fuse on this machine'
    if shutil.which('fusermount3') is None:
        return 'fusermount3 is missing (apt-get install fuse3)'
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # mfusepy raises OSError when it finds no libfuse
        return f'the mfusepy package cannot load libfuse3 ({exc}); pip install mfusepy, apt-get install fuse3'
    return None


@contextlib.contextmanager
def mounted(backing: Path, mount: Path, cuts: Path, seed: int, mean_gap: int, ack: Path) -> Iterator[None]:
    """``crashfs`` over ``backing/root`` at ``mount`` for the duration of the block; always unmounted after."""
    mount.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(CRASHFS), str(backing), str(mount), str(cuts)]
    command += ['--seed', str(seed), '--mean-gap', str(mean_gap), '--ack', str(ack)]
    log = open(backing / 'crashfs.log', 'w+', encoding='utf-8')  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(mount):
            if daemon.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f'crashfs did not mount at {mount}: {log.read()}')
            time.sleep(0.05)
        yield
    finally:
        if os.path.ismount(mount):
            unmounted = subprocess.run(['fusermount3', '-u', str(mount)], capture_output=True, check=False)
            if unmounted.returncode != 0:
                subprocess.run(['fusermount3', '-u', '-z', str(mount)], capture_output=True, check=False)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.seek(0)
        errors = [line for line in log if 'Traceback' in line or 'Uncaught' in line]
        log.close()
        if sys.exc_info()[0] is None:  # do not hide the failure of the block itself
            assert not errors, f'crashfs raised: see {backing / "crashfs.log"}'


@dataclass
class Run:
    """One workload run: its cut records (``crashfs`` writes them) and the acknowledgement lines."""

    mode: str
    folder: Path
    cuts: list[dict[str, Any]]
    acks: list[str]
    archives: list[list[str]] = field(default_factory=list)
    operations: int = 0


def run_workload(
    folder: Path, mode: str, args: list[Any], seed: int, mean_gap: int, archives: list[list[str]] | None = None
) -> Run:
    """Initialise a storage, then run ``crash_workload.py MODE`` on it over ``crashfs``; return what happened."""
    backing, mount, cuts, ack = folder / 'backing', folder / 'mnt', folder / 'cuts', folder / 'acks.txt'
    (backing / 'root').mkdir(parents=True)
    ack.touch()
    profile = SqliteDosStorage.create_profile(
        'crash', filepath=backing / 'root' / STORAGE, default_user_email=workers.EMAIL
    )
    SqliteDosStorage.initialise(profile)
    with mounted(backing, mount, cuts, seed, mean_gap, ack):
        extra = [str(mount / BACKUPS)] if mode == 'backup' else []
        command = [sys.executable, str(WORKLOAD), mode, str(mount / STORAGE), str(ack), *map(str, args), *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (cuts / 'cuts.jsonl').read_text('utf-8').splitlines()]
    return Run(mode, folder, records, ack.read_text('utf-8').splitlines(), [list(a) for a in archives or []])


def make_archives(folder: Path, count: int, pairs: int) -> list[tuple[Path, list[str]]]:
    """``count`` archives of ``pairs`` distinct pairs each (made off the mount), with the data uuids each holds."""
    from sqlitedos.archive import create_archive

    archives = []
    for index in range(count):
        profile = SqliteDosStorage.create_profile(
            f'a{index}', filepath=folder / f'source{index}', default_user_email=workers.EMAIL
        )
        SqliteDosStorage.initialise(profile)
        with SqliteDosStorage(profile) as source:
            uuids = [workers.store_pair(source, f'archive-{index}-{n}') for n in range(pairs)]
            create_archive(source, folder / f'pairs{index}.aiida')
        archives.append((folder / f'pairs{index}.aiida', uuids))
    return archives


def present(storage: Any, uuids: list[str]) -> set[str]:
    """Which of ``uuids`` are stored."""
    found: set[str] = set()
    for start in range(0, len(uuids), 500):
        qb = QueryBuilder(backend=storage).append(
            entity_type='', orm_base='node', filters={'uuid': {'in': uuids[start : start + 500]}}, project=['uuid']
        )
        found.update(row[0] for row in qb.all())
    return found


def stored_data_uuids(storage: Any) -> list[str]:
    qb = QueryBuilder(backend=storage).append(
        entity_type=workers.DATA_TYPE, orm_base='node', filters={'label': workers.DATA_LABEL}, project=['uuid']
    )
    return [row[0] for row in qb.all()]


def lost_suffix(acknowledged: list[str], found: set[str]) -> int:
    """How many acknowledged items were lost; they must be the last ones (a power cut loses a suffix, never a gap)."""
    kept = [item in found for item in acknowledged]
    survivors = sum(kept)
    assert kept == [True] * survivors + [False] * (len(kept) - survivors), (
        f'acknowledged items lost out of order: {"".join("1" if k else "0" for k in kept)}'
    )
    return len(kept) - survivors


def check_whole(storage: Any) -> int:
    """Every stored pair is whole: its link, and its files byte for byte; no half pair; ``verify`` passes."""
    report = verify(storage)
    assert report.ok, report.problems
    assert workers.half_pairs(storage) == (0, 0)
    uuids = stored_data_uuids(storage)
    for uuid in uuids:
        assert workers.check_data_node(storage, uuid) == []
    return len(uuids)


def check_cut(run: Run, record: dict[str, Any], variant: str) -> dict[str, Any]:
    """Open the durable state of one cut and check every promise; return the figures (what was lost)."""
    root = run.folder / 'cuts' / record['folder'] / variant
    acks = run.acks[: record['acks']]
    figures: dict[str, Any] = {'variant': variant, 'op': record['op'], 'what': record['what']}
    with workers.open_storage(str(root / STORAGE)) as storage:
        figures['pairs'] = check_whole(storage)
        pairs = [line.split()[1] for line in acks if line.startswith('pair ')]
        figures['acked'] = len(pairs)
        figures['lost'] = lost_suffix(pairs, present(storage, pairs))
        # SQLite keeps (synchronous=NORMAL in WAL) every commit made before the WAL's last fsync, which comes at
        # each checkpoint (and the database's fsync ends one); a single writer commits nothing during a checkpoint.
        synced = max(record['synced_acks'].get(f'/{STORAGE}/{name}', 0) for name in (WAL, DATABASE))
        figures['durable'] = sum(line.startswith('pair ') for line in acks[:synced])
        assert figures['acked'] - figures['lost'] >= figures['durable'], 'a commit synced to the WAL was lost'
        if run.mode == 'import':
            figures.update(check_imports(storage, run.archives, acks, synced))
        if run.mode == 'backup':
            figures.update(check_backups(root / BACKUPS, acks))
        storage.maintain()
        assert verify(storage).ok
        storage.maintain(full=True)
        assert check_whole(storage) == figures['pairs']
    return figures


def check_imports(storage: Any, archives: list[list[str]], acks: list[str], synced: int) -> dict[str, Any]:
    """Each archive is imported whole or not at all; acknowledged imports are lost only as a suffix, and never one
    acknowledged before the WAL's last fsync (``synced`` acknowledgement lines)."""
    done = [int(line.split()[1]) for line in acks if line.startswith('import ')]
    whole = []
    for uuids in archives:
        count = len(present(storage, uuids))
        assert count in (0, len(uuids)), f'an import is half there: {count} of {len(uuids)} nodes'
        whole.append(count == len(uuids))
    assert all(whole[: sum(whole)]) and not any(whole[sum(whole) :]), f'imports kept out of order: {whole}'
    durable = sum(line.startswith('import ') for line in acks[:synced])
    assert sum(whole) >= durable, f'{durable} imports were synced, {sum(whole)} are there'
    return {'imports_acked': len(done), 'imports_lost': max(0, len(done) - sum(whole)), 'imports_durable': durable}


def check_backups(destination: Path, acks: list[str]) -> dict[str, Any]:
    """Every ``backup_*`` folder is a complete storage, and ``last-backup`` names one of them."""
    acked = [line.split()[1] for line in acks if line.startswith('backup ')]
    folders = sorted(destination.glob('backup_*')) if destination.is_dir() else []
    for folder in folders:
        with workers.open_storage(str(folder)) as backup:
            check_whole(backup)
    last = destination / 'last-backup'
    if last.is_symlink():
        assert last.resolve() in [folder.resolve() for folder in folders], f'last-backup names {os.readlink(last)}'
    lost = set(acked) - {folder.name for folder in folders}
    assert not lost, f'backups that had returned are gone: {sorted(lost)}'
    return {'backups_acked': len(acked), 'backups_in_place': len(folders)}
