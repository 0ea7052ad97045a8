"""The names of a storage folder's files and folders, and of a disk-objectstore container's, in one place.

A storage folder (aiida's ``core.sqlite_dos`` layout) holds ``database.sqlite`` and ``container/``; the container
holds ``config.json`` (with its ``container_id``), the folders ``loose``, ``packs``, ``sandbox``, ``duplicates`` and
the pack index ``packs.idx``. This module sits beside ``db.py``: it imports nothing from the package but the
exceptions, so the storage, the repository and the tools all take the names from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlitedos.exceptions import CorruptStorage, StorageIOError, StoragePermissionError, UnreachableStorage

__all__ = (
    'CONTAINER_CONFIG',
    'CONTAINER_FOLDERS',
    'FILENAME_CONTAINER',
    'FILENAME_DATABASE',
    'LOOSE',
    'PACKS',
    'PACKS_INDEX',
    'read_container_id',
)

#: The storage folder's SQLite database.
FILENAME_DATABASE = 'database.sqlite'
#: The storage folder's disk-objectstore container.
FILENAME_CONTAINER = 'container'
#: The container's configuration file (its ``container_id`` and pack settings).
CONTAINER_CONFIG = 'config.json'
#: The container's folders of loose objects and of packs.
LOOSE = 'loose'
PACKS = 'packs'
#: Every folder a complete container has.
CONTAINER_FOLDERS = (LOOSE, PACKS, 'sandbox', 'duplicates')
#: disk-objectstore's pack index (a SQLite database in WAL mode) inside the container folder.
PACKS_INDEX = 'packs.idx'


def read_container_id(folder: str | os.PathLike[str]) -> str:
    """The ``container_id`` of the container in ``folder``, read from its ``config.json`` without importing it.

    Raises ``UnreachableStorage`` if the container is missing or incomplete, ``StorageIOError`` (or
    ``StoragePermissionError``) if the disk refuses the read, ``CorruptStorage`` if its configuration cannot be
    parsed.
    """
    folder = Path(folder)
    config_path = folder / CONTAINER_CONFIG
    missing = [name for name in CONTAINER_FOLDERS if not (folder / name).is_dir()]
    if not config_path.is_file() or missing:
        what = f'its folders {missing}' if missing else f'its {CONTAINER_CONFIG}'
        raise UnreachableStorage(
            f'the repository container {str(folder)!r} is missing {what}; restore the container from a backup '
            'or point the profile at the right storage folder'
        )
    try:
        data = config_path.read_bytes()
    except OSError as exc:  # the disk, not the content: an I/O error or a refused permission is no damage
        denied = isinstance(exc, PermissionError)
        raise (StoragePermissionError if denied else StorageIOError)(
            f'the repository container configuration {str(config_path)!r} cannot be read ({exc}): check the disk '
            'and the permissions of the folder, and retry'
        ) from exc
    try:
        config = json.loads(data.decode('utf-8'))
        container_id = config['container_id']
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptStorage(
            f'the repository container configuration {str(config_path)!r} cannot be read ({exc!r}); '
            'restore it from a backup'
        ) from exc
    if not isinstance(container_id, str):
        raise CorruptStorage(f'the container id in {str(config_path)!r} is not a string: {container_id!r}')
    return container_id
