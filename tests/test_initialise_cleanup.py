"""A failed ``initialise`` removes what it created, so the retry is not refused as "not empty"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mounts import small_tmpfs

from sqlitedos.exceptions import StorageMigrationError
from sqlitedos.storage.sqlite_dos import SqliteDosStorage


def profile_for(folder: Path):
    return SqliteDosStorage.create_profile('t', filepath=folder, default_user_email='me@lab.org')


@pytest.mark.parametrize('existing', [False, True], ids=['new-folder', 'empty-folder'])
def test_disk_full_leaves_nothing_and_the_retry_works(tmp_path: Path, existing: bool) -> None:
    with small_tmpfs(tmp_path / 'disk', '96k') as disk:
        folder = disk / 'storage'
        if existing:
            folder.mkdir()
        with pytest.raises((StorageMigrationError, OSError)) as info:
            SqliteDosStorage.initialise(profile_for(folder))
        assert 'full' in str(info.value) or 'No space' in str(info.value)
        if existing:
            assert folder.is_dir() and list(folder.iterdir()) == []
        else:
            assert not folder.exists()
        subprocess.run(['mount', '-o', 'remount,size=16m', str(disk)], check=True)
        assert SqliteDosStorage.initialise(profile_for(folder)) is True
        with SqliteDosStorage(profile_for(folder)) as storage:
            assert storage.default_user.email == 'me@lab.org'


def test_without_disk_objectstore_nothing_is_left(tmp_path: Path) -> None:
    """In a child process where ``import disk_objectstore`` fails, initialise fails and leaves no folder."""
    folder = tmp_path / 'parent' / 'storage'
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'disk_objectstore':
                    raise ModuleNotFoundError(f'No module named {{name!r}}')
        sys.meta_path.insert(0, Block())
        from sqlitedos.storage.sqlite_dos import SqliteDosStorage
        profile = SqliteDosStorage.create_profile('t', filepath={str(folder)!r})
        try:
            SqliteDosStorage.initialise(profile)
        except ImportError as exc:
            print('ImportError', exc)
        """
    )
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith('ImportError'), done.stdout + done.stderr
    assert not (tmp_path / 'parent').exists()
    assert SqliteDosStorage.initialise(profile_for(folder)) is True
