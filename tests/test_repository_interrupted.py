"""Maintenance cut off or out of space (issue 13, items 5 and 6), on real processes, tmpfs and injected errors.

Every interruption (SIGKILL at a random moment, one EIO on link/fsync/fdatasync injected by ``strace``, a full
tmpfs during a repack or a packing) must leave a storage that opens, verifies and maintains again with no hand work,
with every stored file intact; a failed packing must not leave dead bytes behind, and the CLI has a way out of a
full disk.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mounts
import pytest

from sqlitedos import SqliteDosStorage

FOLDER = 'data.core.folder.FolderData.'
needs_strace = pytest.mark.skipif(shutil.which('strace') is None, reason='strace is missing (apt-get install strace)')


def cli(*args: str | Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, '-m', 'sqlitedos', '--progress', 'never', *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def open_storage(root: Path) -> SqliteDosStorage:
    return SqliteDosStorage(SqliteDosStorage.create_profile('t', filepath=root))


def make_storage(root: Path, files: int, size: int, orphans: int = 0, pack: bool = True) -> dict[int, bytes]:
    """A storage with ``files`` nodes of one random file each (packed unless ``pack`` is False); ``{pk: content}``."""
    profile = SqliteDosStorage.create_profile('t', filepath=root, default_user_email='t@example.org')
    SqliteDosStorage.initialise(profile)
    storage = SqliteDosStorage(profile)
    contents = {}
    try:
        for _ in range(files):
            node = storage.nodes.create(node_type=FOLDER, user=storage.default_user)
            content = os.urandom(size)
            node.repository.put_object_from_bytes(content, 'data.bin')
            contents[node.store().pk] = content
        for _ in range(orphans):
            storage.get_repository().put_object_from_filelike(io.BytesIO(os.urandom(size)))
        if pack:
            storage.maintain()
    finally:
        storage.close()
    return contents


def assert_contents(root: Path, contents: dict[int, bytes]) -> None:
    storage = open_storage(root)
    try:
        for pk, content in contents.items():
            assert storage.nodes.get(pk=pk).repository.get_object_content('data.bin', mode='rb') == content
    finally:
        storage.close()


def assert_recovers(root: Path, contents: dict[int, bytes]) -> str:
    """Open, verify (no crash), ``maintain --full`` (exit 0), verify clean, every file intact; the first verify."""
    first = cli('verify', root)
    assert first.returncode in (0, 1) and 'Traceback' not in first.stderr, first.stderr
    maintained = cli('maintain', '--full', root)
    assert maintained.returncode == 0, maintained.stderr
    second = cli('verify', root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not list((root / 'container' / 'packs').glob('-1*'))
    assert_contents(root, contents)
    return first.stdout


@pytest.fixture(scope='module')
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, bytes]]:
    root = tmp_path_factory.mktemp('template') / 'storage'
    return root, make_storage(root, files=40, size=64 * 1024)


@pytest.fixture
def packed(template: tuple[Path, dict[int, bytes]], tmp_path: Path) -> tuple[Path, dict[int, bytes]]:
    root = tmp_path / 'storage'
    shutil.copytree(template[0], root)
    return root, template[1]


# --- item 5: interrupted full maintenance -----------------------------------------------------------------------


@needs_strace
def test_eio_on_link_during_repack_recovers(packed: tuple[Path, dict[int, bytes]]) -> None:
    """The link of pack -1 back to its id fails after the old pack was removed: the index names pack -1."""
    root, contents = packed
    inject = ('strace', '-f', '-qq', '-o', os.devnull, '-e', 'trace=link,linkat', '-e', 'inject=link,linkat:error=EIO')
    failed = cli('maintain', '--full', root, prefix=inject)
    assert failed.returncode == 1 and 'Traceback' not in failed.stderr, failed.stderr
    report = assert_recovers(root, contents)
    assert '[interrupted_repack]' in report and 'name the repack pack -1' in report, report


@needs_strace
@pytest.mark.slow
@pytest.mark.parametrize('when', [1, 2, 3, 4, 5, 6, 8, 10])
def test_eio_on_fsync_during_full_maintenance_recovers(packed: tuple[Path, dict[int, bytes]], when: int) -> None:
    root, contents = packed
    inject = ('strace', '-f', '-qq', '-o', os.devnull, '-e', 'trace=fsync,fdatasync')
    failed = cli('maintain', '--full', root, prefix=(*inject, '-e', f'inject=fsync,fdatasync:error=EIO:when={when}'))
    assert 'Traceback' not in failed.stderr, failed.stderr
    assert_recovers(root, contents)


@pytest.mark.slow
def test_sigkill_at_random_points_of_full_maintenance_recovers(
    template: tuple[Path, dict[int, bytes]], tmp_path: Path
) -> None:
    source, contents = template
    timing = tmp_path / 'timing'
    shutil.copytree(source, timing)
    start = time.monotonic()
    assert cli('maintain', '--full', timing).returncode == 0
    duration = time.monotonic() - start
    chooser = random.Random()
    killed_in_repack = attempt = 0
    # 8 cuts, half of them aimed at the repack; a repack can be over between two polls on a loaded machine, so
    # aimed cuts go on (at most 24 in all) until one really fell inside it.
    while attempt < 8 or (not killed_in_repack and attempt < 24):
        root = tmp_path / f'run-{attempt}'
        shutil.copytree(source, root)
        repack = root / 'container' / 'packs' / '-1'
        process = subprocess.Popen([sys.executable, '-m', 'sqlitedos', '--progress', 'never', 'maintain', '--full',
                                    str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        if attempt % 2 and attempt < 8:  # anywhere in the run (the interpreter and imports take the first 0.3 s)
            time.sleep(chooser.uniform(0.3, max(duration, 0.5)))
        else:  # somewhere in the repack: from the moment pack -1 appears
            while process.poll() is None and not repack.exists():
                time.sleep(0.0005)
            time.sleep(chooser.uniform(0, 0.02) if attempt < 8 else 0)
        killed_in_repack += repack.exists()
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert_recovers(root, contents)
        attempt += 1
    assert killed_in_repack >= 1  # at least one cut really fell inside a repack


def test_stale_repack_files_are_named_and_cleared(packed: tuple[Path, dict[int, bytes]]) -> None:
    """What a repack killed while writing pack -1 leaves: ``packs/-1`` and ``packs/-1.lock``."""
    root, contents = packed
    packs = root / 'container' / 'packs'
    (packs / '-1').write_bytes(os.urandom(1000))
    (packs / '-1.lock').write_text('')
    report = cli('verify', root)
    assert report.returncode == 1
    assert 'packs/-1:' in report.stdout and 'packs/-1.lock' in report.stdout, report.stdout
    assert_recovers(root, contents)


def test_index_naming_pack_minus_one_with_the_old_pack_still_there(packed: tuple[Path, dict[int, bytes]]) -> None:
    """Cut after the rows moved to pack -1 and before the old pack was removed: both files exist."""
    import sqlite3

    root, contents = packed
    packs = root / 'container' / 'packs'
    shutil.copyfile(packs / '0', packs / '-1')  # the repacked copy (same offsets: nothing was deleted)
    index = sqlite3.connect(root / 'container' / 'packs.idx')
    with index:
        index.execute('UPDATE db_object SET pack_id = -1 WHERE pack_id = 0')
    index.close()
    assert 'name the repack pack -1' in assert_recovers(root, contents)


# --- items 5 and 6 on a real, small tmpfs ------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 8 MiB tmpfs mounted inside the test's folder (unmounted afterwards)."""
    with mounts.small_tmpfs(tmp_path / 'tmpfs', '8m') as mount:
        yield mount


def fill(mount: Path, leave: int) -> Path:
    """Fill the file system with one file, leaving about ``leave`` bytes free."""
    filler = mount / 'filler'
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, 'wb') as handle:
        handle.write(b'\0' * max(0, free - leave))
    return filler


def free_bytes(mount: Path) -> int:
    stats = os.statvfs(mount)
    return stats.f_bavail * stats.f_frsize


def test_disk_full_during_live_packing_leaves_no_dead_bytes_and_has_a_way_out(small_tmpfs: Path) -> None:
    root = small_tmpfs / 'storage'
    contents = make_storage(root, files=12, size=64 * 1024, orphans=24, pack=False)  # 0.75 MiB used, 1.5 MiB not
    fill(small_tmpfs, leave=256 * 1024)
    pack = root / 'container' / 'packs' / '0'
    free = []
    for _ in range(3):
        failed = cli('maintain', root)
        assert failed.returncode == 1 and 'Traceback' not in failed.stderr, failed.stderr
        assert not pack.exists() or pack.stat().st_size == 0  # nothing indexed in it: no dead tail kept
        assert 'is full' in failed.stderr and 'maintain --full --no-pack' in failed.stderr, failed.stderr
        free.append(free_bytes(small_tmpfs))
    assert free[0] == free[1] == free[2]
    way_out = cli('maintain', '--full', '--no-pack', root)
    assert way_out.returncode == 0, way_out.stderr
    assert free_bytes(small_tmpfs) >= free[0] + 24 * 64 * 1024  # the unreferenced objects are gone
    assert cli('maintain', root).returncode == 0  # now packing fits
    assert cli('verify', root).returncode == 0
    assert_contents(root, contents)


def test_disk_full_during_repack_recovers(small_tmpfs: Path) -> None:
    root = small_tmpfs / 'storage'
    contents = make_storage(root, files=24, size=64 * 1024)  # pack 0: 1.5 MiB
    filler = fill(small_tmpfs, leave=512 * 1024)  # a repack needs room for a whole copy of the pack
    failed = cli('maintain', '--full', root)
    assert failed.returncode == 1 and 'is full' in failed.stderr and 'Traceback' not in failed.stderr, failed.stderr
    filler.unlink()
    assert 'packs/-1' in assert_recovers(root, contents)


def test_packed_storage_fixture_is_packed(packed: tuple[Path, dict[int, bytes]]) -> None:
    root, contents = packed
    storage = open_storage(root)
    try:
        counts: Any = storage.get_repository().get_info()['Objects']
        assert counts['packed'] == len(contents) and counts['loose'] == 0
    finally:
        storage.close()
