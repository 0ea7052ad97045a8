"""Edges of the ``sqlitedos`` command: what ``archive create --overwrite`` may replace, usage errors, progress,
and messages that read well."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
