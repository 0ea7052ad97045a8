"""What an interrupted export or backup leaves behind is cleaned up by the next run, never a trap.

A real SIGKILL of an ``archive create`` child, and a real I/O error (``strace -e inject=write:error=EIO``) in a
child's first backup.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import reliability_workers as workers

from sqlitedos import SqliteDosStorage
from sqlitedos.archive import create_archive, import_archive
from sqlitedos.archive.export import STALE_WORKDIR_SECONDS, WORKDIR_PREFIX

STRACE = shutil.which('strace')
TESTS = Path(__file__).parent


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A closed storage folder holding three pairs."""
    root = tmp_path / 'storage'
    profile = SqliteDosStorage.create_profile('c', filepath=root, default_user_email=workers.EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        for index in range(3):
            workers.store_pair(storage, str(index))
    return root


EXPORT_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import reliability_workers as workers
    from sqlitedos.archive import create_archive

    def progress(stage, done, total):
        if stage == 'Writing files':
            print('READY', flush=True)
            time.sleep(120)

    with workers.open_storage(sys.argv[2]) as storage:
        create_archive(storage, sys.argv[3], progress=progress)
    """
)


def workdirs(folder: Path) -> list[Path]:
    return sorted(folder.glob(WORKDIR_PREFIX + '*'))


def test_killed_export_leaves_a_work_folder_that_the_next_export_removes(root: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out'
    out.mkdir()
    child = subprocess.Popen(
        [sys.executable, '-c', EXPORT_CHILD, str(TESTS), str(root), str(out / 'a.aiida')],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == 'READY'
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    killed = workdirs(out)
    assert len(killed) == 1 and (killed[0] / 'db.sqlite3').is_file()
    # A live export's folder (this process's) and a recent unowned one are left alone; an old unowned one goes.
    live = out / f'{WORKDIR_PREFIX}{socket.gethostname()}-{os.getpid()}-live'
    recent, old = out / f'{WORKDIR_PREFIX}recent', out / f'{WORKDIR_PREFIX}old'
    for folder in (live, recent, old):
        folder.mkdir()
    stamp = time.time() - STALE_WORKDIR_SECONDS - 60
    os.utime(old, (stamp, stamp))
    with workers.open_storage(str(root)) as storage:
        path = create_archive(storage, out / 'a.aiida')
    assert workdirs(out) == sorted([live, recent])
    target = SqliteDosStorage.create_profile('t', filepath=tmp_path / 'target', default_user_email=workers.EMAIL)
    SqliteDosStorage.initialise(target)
    with SqliteDosStorage(target) as storage:
        import_archive(storage, path)
        assert storage.nodes.count() == 6


@pytest.mark.skipif(STRACE is None, reason='strace is not installed: apt-get install strace')
def test_io_error_in_a_first_backup_does_not_block_the_destination(root: Path, tmp_path: Path) -> None:
    dest = tmp_path / 'backups'
    code = f'import sys; sys.path.insert(0, {str(TESTS)!r}); import reliability_workers as w\n'
    code += f'with w.open_storage({str(root)!r}) as s: s.backup({str(dest)!r})'
    done = subprocess.run(
        [STRACE, '-f', '-qq', '-o', os.devnull, '-P', str(dest / 'config.json.partial'), '-e', 'inject=write:error=EIO']
        + [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and 'Input/output error' in done.stderr, done.stderr
    assert not (dest / 'config.json.partial').exists()
    with workers.open_storage(str(root)) as storage:
        backup = storage.backup(dest)
    assert (dest / 'config.json').is_file() and backup.parent == dest


def test_partial_files_of_a_killed_first_backup_do_not_block_the_destination(root: Path, tmp_path: Path) -> None:
    dest = tmp_path / 'backups'
    dest.mkdir()
    (dest / 'config.json.partial').write_text('{"CONFIG_VERSION"')  # as a kill between write and rename leaves it
    (dest / 'last-backup.partial').symlink_to('backup_x', target_is_directory=True)
    (dest / 'live-backup').mkdir()
    with workers.open_storage(str(root)) as storage:
        backup = storage.backup(dest)
    assert sorted(path.name for path in dest.iterdir()) == sorted(['config.json', 'last-backup', backup.name])
    with workers.open_storage(str(backup)) as copy:
        assert copy.nodes.count() == 6
