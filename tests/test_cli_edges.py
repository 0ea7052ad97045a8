"""Edges of the ``sqlitedos`` command: what ``archive create --overwrite`` may replace, usage errors, progress,
and messages that read well."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sqlitedos.cli import cli


def run(*args: Any, exit_code: int = 0) -> Result:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == exit_code, (args, result.output, result.stderr, result.exception)
    return result


@pytest.fixture(scope='module')
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('demo') / 'storage'
    run('demo', path)
    return path


@pytest.fixture
def storage_path(demo_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_folder, tmp_path / 'storage'))


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
