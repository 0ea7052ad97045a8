"""Backups of a storage folder in pure Python: SQLite's online backup API plus hard-linked container files.

The destination layout is aiida's (``verdi storage backup``, SPEC 4.9)::

    dest/config.json                 an aiida configuration holding the one profile backed up
    dest/last-backup -> backup_...   symlink to the newest backup
    dest/backup_<UTC time>_<rand>/   database.sqlite + container/, a complete storage folder

Each backup is first written into ``dest/live-backup`` and renamed when complete, so a crash never leaves a half
backup under a ``backup_*`` name. The database (and the container's ``packs.idx``) are copied with
``sqlite3.Connection.backup``, which gives a consistent snapshot while other processes keep writing. Container
files are content-addressed and never rewritten in place (loose objects are named by their hash; packs are only
appended to, and rewritten as new files by a full repack), so a file whose size and modification time equal those
of its copy in the previous backup is hard-linked to that copy instead of copied (rsync's ``--link-dest``).

Order matters for consistency: database first, then loose objects, then ``packs.idx``, then the pack files. Every
object the database snapshot references was in the container before its row was written; if a loose object is
packed (and its loose file removed) while we copy, it is in the ``packs.idx`` snapshot taken afterwards, and the
pack files copied after that are at least as long as the index says.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import sqlite3
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlitedos.db import connect
from sqlitedos.exceptions import CorruptStorage, StorageBackupError, StorageIOError, UnreachableStorage
from sqlitedos.layout import (
    CONTAINER_CONFIG,
    CONTAINER_FOLDERS,
    FILENAME_CONTAINER,
    FILENAME_DATABASE,
    LOOSE,
    PACKS,
    PACKS_INDEX,
    read_container_id,
)

if TYPE_CHECKING:
    from sqlitedos.storage.sqlite_dos import SqliteDosStorage

__all__ = ('BackupManager', 'Progress', 'backup', 'backup_storage')

#: ``progress(stage, done, total)``, the same shape as the archive tools' callback.
Progress = Callable[[str, int, int], None] | None

FILENAME_CONFIG = 'config.json'
LIVE_FOLDER = 'live-backup'
LAST_LINK = 'last-backup'
BACKUP_PREFIX = 'backup_'
TIME_FORMAT = '%Y%m%d%H%M%S'
PARTIAL_SUFFIX = '.partial'
#: What an interrupted backup may leave in a destination that holds no backup yet: removed, never a reason to refuse.
LEFTOVERS = frozenset({LIVE_FOLDER, FILENAME_CONFIG + PARTIAL_SUFFIX, LAST_LINK + PARTIAL_SUFFIX})
#: aiida's configuration schema version (``aiida/manage/configuration/migrations``), written into ``config.json``.
CONFIG_VERSION = {'CURRENT': 9, 'OLDEST_COMPATIBLE': 9}


@dataclass
class BackupManager:
    """The destination folder of a series of backups (aiida's ``BackupManager``, local paths only)."""

    path: Path
    keep: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path).absolute()
        if self.keep is not None and (not isinstance(self.keep, int) or self.keep < 0):
            raise ValueError(f'keep must be a non-negative integer or None, not {self.keep!r}')

    def backup_folders(self) -> list[Path]:
        """The completed backups, oldest first (their names sort by time)."""
        if not self.path.is_dir():
            return []
        folders = [p for p in self.path.glob(f'{BACKUP_PREFIX}*_*') if p.is_dir() and not p.is_symlink()]
        # Names sort by time to the second; within one second the folder's own mtime decides.
        return sorted(
            folders, key=lambda p: (p.name[: len(BACKUP_PREFIX) + len('YYYYmmddHHMMSS')], p.stat().st_mtime_ns)
        )

    def previous_backup(self) -> Path | None:
        """The newest completed backup, or None."""
        folders = self.backup_folders()
        return folders[-1] if folders else None

    def validate_or_init(self, profile_name: str, profile_dict: dict, container_id: str) -> None:
        """Create the destination or check that it holds backups of this storage, and (re)write ``config.json``."""
        if self.path.exists() and not self.path.is_dir():
            raise StorageBackupError(f'the backup destination {str(self.path)!r} is a file: choose a folder')
        if not self.path.is_dir():
            self.path.mkdir()  # like aiida: the parent must exist
            _fsync_folder(self.path.parent)
        config_path = self.path / FILENAME_CONFIG
        self._remove_leftovers()
        if config_path.exists():
            profile_dict = self._check_config(config_path, profile_dict)
        elif any(p.name not in LEFTOVERS for p in self.path.iterdir()):
            raise StorageBackupError(
                f'the backup destination {str(self.path)!r} is not empty and has no {FILENAME_CONFIG}: it does not '
                'hold backups of a storage; choose an empty or new folder'
            )
        previous = self.previous_backup()
        if previous is not None:
            previous_id = _read_container_id(previous / FILENAME_CONTAINER)
            if previous_id is not None and previous_id != container_id:
                raise StorageBackupError(
                    f'the backups in {str(self.path)!r} are of another storage (repository {previous_id}, this one is '
                    f'{container_id}): choose another destination'
                )
        self._write_config(profile_name, profile_dict)

    def _check_config(self, config_path: Path, profile_dict: dict) -> dict:
        try:
            profiles = json.loads(config_path.read_text('utf-8'))['profiles']
            ((_, existing),) = profiles.items()
            backend = existing['storage']['backend']
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageBackupError(
                f'{str(config_path)!r} is not the configuration of a backup of one profile ({exc!r}): choose another '
                'destination'
            ) from exc
        if backend != profile_dict['storage']['backend']:
            raise StorageBackupError(
                f'the backups in {str(self.path)!r} are of a {backend!r} storage, not a '
                f'{profile_dict["storage"]["backend"]!r} one: choose another destination'
            )
        # Keep the recorded profile uuid: a command-line profile gets a new one each run.
        return {**profile_dict, 'PROFILE_UUID': existing.get('PROFILE_UUID', profile_dict.get('PROFILE_UUID'))}

    def _remove_leftovers(self) -> None:
        """Delete the half-written files an interrupted backup (killed, or an I/O error) may have left."""
        for name in (FILENAME_CONFIG + PARTIAL_SUFFIX, LAST_LINK + PARTIAL_SUFFIX):
            leftover = self.path / name
            if leftover.is_symlink() or leftover.is_file():
                leftover.unlink()

    def _write_config(self, profile_name: str, profile_dict: dict) -> None:
        content = {'CONFIG_VERSION': CONFIG_VERSION, 'profiles': {profile_name: profile_dict}}
        partial = self.path / (FILENAME_CONFIG + PARTIAL_SUFFIX)
        try:
            partial.write_text(json.dumps(content, indent=4), 'utf-8')
            _fsync(partial)
            os.replace(partial, self.path / FILENAME_CONFIG)
        except BaseException:
            partial.unlink(missing_ok=True)  # else it would block the destination (it is neither empty nor a backup)
            raise
        _fsync_folder(self.path)

    def backup_auto_folders(self, backup_fn: Callable[[Path, Path | None], None]) -> Path:
        """Run ``backup_fn(live_folder, previous)``, publish the result under a timestamped name, rotate; return it."""
        previous = self.previous_backup()
        live = self.path / LIVE_FOLDER
        if live.exists():  # left by an interrupted backup
            shutil.rmtree(live)
        try:
            backup_fn(live, previous)
        except BaseException:
            shutil.rmtree(live, ignore_errors=True)
            raise
        final = self.path / _new_backup_name()
        while final.exists():
            final = self.path / _new_backup_name()
        _fsync_folders(live)  # every entry, so a power cut never leaves a half backup under its final name
        os.replace(live, final)
        _fsync_folder(self.path)
        self._point_last_backup(final)
        self.rotate()
        return final

    def _point_last_backup(self, target: Path) -> None:
        link = self.path / LAST_LINK
        partial = self.path / (LAST_LINK + PARTIAL_SUFFIX)
        if partial.is_symlink() or partial.exists():
            partial.unlink()
        partial.symlink_to(target.name, target_is_directory=True)
        os.replace(partial, link)  # atomic: readers see the old or the new target, never none
        _fsync_folder(self.path)

    def rotate(self) -> list[Path]:
        """Delete all but the newest ``keep + 1`` backups (aiida's meaning of ``keep``); return what was deleted."""
        if self.keep is None:
            return []
        folders = self.backup_folders()
        doomed = folders[: max(0, len(folders) - (self.keep + 1))]
        for folder in doomed:
            shutil.rmtree(folder)
        return doomed


def _new_backup_name() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime(TIME_FORMAT)
    suffix = ''.join(random.choices(string.ascii_lowercase + string.digits, k=4))
    return f'{BACKUP_PREFIX}{stamp}_{suffix}'


def _read_container_id(folder: Path) -> str | None:
    """The container's id, or None if it cannot be read (a backup then refuses or does not compare it)."""
    try:
        return read_container_id(folder)
    except (UnreachableStorage, CorruptStorage, StorageIOError):
        return None


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database with the online backup API: a consistent snapshot even while others write.

    ``pages=-1`` copies every page in one step, inside one read transaction; in WAL mode that does not block
    writers, and nothing can change under the copy, so it never restarts (https://www.sqlite.org/backup.html).
    """
    try:
        source_connection = connect(source, read_only=True)  # leaves the source folder as it was
        try:
            target_connection = connect(target, create=True)
            try:
                source_connection.backup(target_connection, pages=-1)
                # Leave one self-contained file: no -wal beside it, whatever the journal mode of the source.
                target_connection.execute('PRAGMA wal_checkpoint(TRUNCATE)')
            finally:
                target_connection.close()
        finally:
            source_connection.close()
    except (sqlite3.Error, CorruptStorage, UnreachableStorage) as exc:
        raise StorageBackupError(
            f'cannot copy the SQLite database {str(source)!r} ({exc}): check it with `sqlitedos verify`'
        ) from exc
    _fsync(target)


def _fsync(path: Path) -> None:
    with open(path, 'rb') as handle:
        os.fsync(handle.fileno())


def _fsync_folder(path: Path) -> None:
    """Make a folder's entries (new, renamed and removed names) durable: POSIX asks for an fsync of the folder."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folders(root: Path) -> None:
    for folder, _, _ in os.walk(root, topdown=False):
        _fsync_folder(Path(folder))


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def _link_or_copy(source: Path, target: Path, previous: Path | None) -> bool:
    """Hard-link ``target`` to ``previous`` if it holds the same file as ``source``, else copy; True if linked.

    Raises ``FileNotFoundError`` if ``source`` vanished (a loose object packed meanwhile).
    """
    stat = source.stat()
    if previous is not None:
        try:
            if _same_file(previous.stat(), stat):
                os.link(previous, target)
                return True
        except OSError:  # no previous copy, or a file system without hard links: copy instead
            pass
    shutil.copy2(source, target)
    _fsync(target)  # a linked file is already durable: it is the previous backup's copy
    return False


def _iter_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob('*') if p.is_file()) if folder.is_dir() else []


def copy_container(source: Path, target: Path, previous: Path | None, progress: Progress = None) -> dict[str, int]:
    """Copy a disk-objectstore container folder; return counts of files ``copied``, ``linked`` and ``vanished``."""
    counts = {'copied': 0, 'linked': 0, 'vanished': 0}
    target.mkdir(parents=True)
    for name in CONTAINER_FOLDERS:
        (target / name).mkdir()
    shutil.copy2(source / CONTAINER_CONFIG, target / CONTAINER_CONFIG)
    _fsync(target / CONTAINER_CONFIG)
    loose = _iter_files(source / LOOSE)
    packs_before = _iter_files(source / PACKS)
    total = len(loose) + len(packs_before) + 1
    done = 0

    def copy_one(path: Path) -> None:
        nonlocal done
        relative = path.relative_to(source)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            linked = _link_or_copy(path, destination, previous / relative if previous is not None else None)
            counts['linked' if linked else 'copied'] += 1
        except FileNotFoundError:
            counts['vanished'] += 1
        done += 1
        if progress is not None:
            progress('Copying container', done, total)

    for path in loose:
        copy_one(path)
    if (source / PACKS_INDEX).is_file():
        copy_sqlite(source / PACKS_INDEX, target / PACKS_INDEX)
    done += 1
    packs = _iter_files(source / PACKS)  # listed again: packing may have started a new pack meanwhile
    total += len(packs) - len(packs_before)
    if progress is not None:
        progress('Copying container', done, total)
    for path in packs:
        copy_one(path)
    return counts


def backup_storage(storage: SqliteDosStorage, path: Path, prev_backup: Path | None, progress: Progress = None) -> None:
    """Write a complete copy of the storage folder into the new folder ``path``, linking to ``prev_backup``."""
    path = Path(path)
    path.mkdir()
    if progress is not None:
        progress('Copying database', 0, 1)
    copy_sqlite(storage.filepath_database, path / FILENAME_DATABASE)
    if progress is not None:
        progress('Copying database', 1, 1)
    previous_container = Path(prev_backup) / FILENAME_CONTAINER if prev_backup is not None else None
    copy_container(storage.filepath_container, path / FILENAME_CONTAINER, previous_container, progress)


def backup(
    storage: SqliteDosStorage, dest: str | os.PathLike[str], keep: int | None = None, progress: Progress = None
) -> Path:
    """Back the storage folder up into ``dest`` (aiida's layout); return the new backup folder.

    :param keep: how many previous backups to keep besides the new one (None: all).
    :param progress: optional ``progress(stage, done, total)`` callback.

    Unlike aiida, the storage is not maintained (packed) first: a backup never changes the storage it copies.
    """
    storage_backend = storage.profile.storage_backend
    if storage_backend != 'core.sqlite_dos':
        raise NotImplementedError(f'backups are implemented for folder storages only, not {storage_backend!r}')
    manager = BackupManager(Path(dest), keep)
    container_id = _read_container_id(storage.filepath_container)
    if container_id is None:
        raise StorageBackupError(f'the storage {str(storage.filepath_root)!r} has no readable container to back up')
    manager.validate_or_init(storage.profile.name, dict(storage.profile.dictionary), container_id)
    return manager.backup_auto_folders(lambda path, previous: backup_storage(storage, path, previous, progress))
