"""Edges of the ``sqlitedos`` command: what ``archive create --overwrite`` may replace, usage errors, progress,
and messages that read well."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import demo_folder, run, storage_path

__all__ = ('demo_folder', 'storage_path')  # fixtures shared with test_cli


# --- archive create --overwrite ----------------------------------------------------------------------------------


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_symlink(path: Path) -> None:
    (path.parent / 'link-target').write_bytes(b'keep me')
    path.symlink_to(path.parent / 'link-target')


def make_dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / 'nowhere')


def make_device(path: Path) -> None:
    """A character device node like /dev/full (1, 7), made inside tmp_path; never /dev itself."""
    if os.geteuid() != 0:
        pytest.skip('making a device node needs root')
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))


@pytest.mark.parametrize(
    ('make', 'kind'),
    [
        (make_fifo, 'FIFO'),
        (make_symlink, 'symbolic link'),
        (make_dangling_symlink, 'symbolic link'),
        (make_device, 'character device'),
    ],
    ids=['fifo', 'symlink', 'dangling-symlink', 'device'],
)
def test_overwrite_refuses_anything_but_a_regular_file(demo_folder: Path, tmp_path: Path, make, kind: str) -> None:
    target = tmp_path / 'out.aiida'
    make(target)
    before = os.lstat(target)
    for extra in ([], ['--overwrite']):
        stderr = run('archive', 'create', demo_folder, target, '--all', *extra, exit_code=1).stderr
        assert f'is a {kind}, not a regular file' in stderr, stderr
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    if (tmp_path / 'link-target').exists():
        assert (tmp_path / 'link-target').read_bytes() == b'keep me'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.sqlitedos-export')] == []


def test_overwrite_replaces_a_regular_file_and_names_the_option(demo_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / 'out.aiida'
    target.write_bytes(b'old')
    stderr = run('archive', 'create', demo_folder, target, '--all', exit_code=1).stderr
    assert '--overwrite' in stderr and 'overwrite=True' not in stderr, stderr
    assert target.read_bytes() == b'old'
    run('archive', 'create', demo_folder, target, '--all', '--overwrite')
    assert target.read_bytes()[:2] == b'PK'


# --- progress -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def many_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage folder with 1500 nodes, each with its own (loose) file."""
    from sqlitedos.storage.sqlite_dos import SqliteDosStorage

    path = tmp_path_factory.mktemp('many') / 'storage'
    profile = SqliteDosStorage.create_profile('t', filepath=path, default_user_email='me@lab.org')
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage, storage.transaction():
        for number in range(1500):
            node = storage.nodes.create(node_type='data.core.folder.FolderData.', user=storage.default_user)
            node.repository.put_object_from_bytes(f'file {number}\n'.encode(), 'f.txt')
            node.store()
    return path


def redraws_on_a_terminal(*args: Any) -> tuple[int, str]:
    """Run ``python -m sqlitedos ARGS`` with stderr on a pseudo-terminal; (number of redraws, what it showed)."""
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, '-m', 'sqlitedos', *map(str, args)], stdout=subprocess.DEVNULL, stderr=slave
    )
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(master)
    assert process.wait(60) == 0, shown.decode(errors='replace')
    return shown.count(b'\r'), shown.decode(errors='replace')


def test_progress_bars_redraw_a_few_times_not_once_per_object(many_files: Path, tmp_path: Path) -> None:
    redraws, shown = redraws_on_a_terminal('verify', many_files)
    assert 'Checking objects' in shown and 0 < redraws < 150, (redraws, shown[-300:])
    redraws, shown = redraws_on_a_terminal('backup', many_files, tmp_path / 'backups')
    assert 'Copying container' in shown and 0 < redraws < 150, (redraws, shown[-300:])


def test_maintain_reports_real_progress(storage_path: Path) -> None:
    from sqlitedos.storage.sqlite_dos import SqliteDosStorage

    calls: list[tuple[str, int, int]] = []
    with SqliteDosStorage(SqliteDosStorage.create_profile('t', filepath=storage_path)) as storage:
        loose_bytes = storage.get_repository().container.get_total_size().total_size_loose
        storage.maintain(progress=lambda *call: calls.append(call))
    assert loose_bytes > 0 and len(calls) >= 2
    assert {stage for stage, _, _ in calls} == {'Packing loose objects'}
    assert calls[0][1:] == (0, loose_bytes) and calls[-1][1:] == (loose_bytes, loose_bytes)
    assert [done for _, done, _ in calls] == sorted(done for _, done, _ in calls)


@pytest.mark.parametrize('where', ['before', 'after'])
def test_progress_option_before_or_after_the_command(storage_path: Path, where: str) -> None:
    args = ['maintain', storage_path]
    args = ['--progress', 'always', *args] if where == 'before' else [*args, '--progress', 'always']
    assert 'Packing loose objects' in run(*args).stderr
    assert run('verify', storage_path, '--progress', 'never').stderr == ''
    for command in (['info', storage_path], ['node', 'show', storage_path, '1'], ['migrate', storage_path]):
        run(*command, '--progress', 'never')  # every command takes it, even those with nothing to show


# --- usage errors and messages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'args',
    [
        ['info'],
        ['--bogus', 'info'],
        ['info', '.', '--bogus'],
        ['query', 'STORAGE', '--filter', 'no operator'],
        ['node', 'show'],
        ['archive', 'create', '.', 'x.aiida'],
    ],
    ids=['missing-argument', 'unknown-group-option', 'unknown-option', 'bad-filter', 'nested-group', 'usage-error'],
)
def test_usage_errors_are_one_line_with_exit_status_2(args: list[str], demo_folder: Path) -> None:
    result = run(*(demo_folder if arg == 'STORAGE' else arg for arg in args), exit_code=2)
    (line,) = result.stderr.splitlines()
    assert line.startswith('Error: ') and line.endswith(" --help')") and 'Usage:' not in line, result.stderr
    assert result.output == result.stderr  # nothing on stdout


def test_messages_name_the_storage_not_its_repr(storage_path: Path, tmp_path: Path) -> None:
    from sqlitedos.exceptions import ClosedStorage
    from sqlitedos.storage.sqlite_dos import SqliteDosStorage

    storage = SqliteDosStorage(SqliteDosStorage.create_profile('t', filepath=storage_path))
    storage.close()
    with pytest.raises(ClosedStorage) as info:
        storage.get_global_variable('x')
    assert str(info.value).startswith(f"the storage folder '{storage_path}' is closed:"), str(info.value)
    assert ', is' not in str(info.value)
    with SqliteDosStorage(SqliteDosStorage.create_profile('t', filepath=storage_path), read_only=True) as storage:
        with pytest.raises(Exception, match=r"^the storage folder '.*' is opened read-only: maintenance"):
            storage.maintain()


def test_os_errors_say_what_they_mean(storage_path: Path, tmp_path: Path) -> None:
    """An immutable backup destination: not a bare '[Errno 1] Operation not permitted'."""
    import subprocess

    if os.geteuid() != 0 or shutil.which('chattr') is None:
        pytest.skip('chattr +i needs root and chattr(1)')
    dest = tmp_path / 'dest'
    dest.mkdir()
    if subprocess.run(['chattr', '+i', str(dest)], capture_output=True).returncode != 0:
        pytest.skip('this file system has no immutable flag')
    try:
        stderr = run('backup', storage_path, dest, exit_code=1).stderr
    finally:
        subprocess.run(['chattr', '-i', str(dest)], check=True)
    assert stderr.startswith('Error: sqlitedos backup: cannot use ') and 'immutable (chattr +i)' in stderr, stderr
    assert not stderr.startswith('Error: [Errno')
