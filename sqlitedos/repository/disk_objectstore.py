"""The disk-objectstore adapter: the only module that imports ``disk_objectstore``, and only inside functions.

Importing ``disk_objectstore`` imports SQLAlchemy (about 0.2 s), so nothing here runs at ``import sqlitedos``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlitedos.exceptions import CorruptStorage, UnreachableStorage

if TYPE_CHECKING:
    from disk_objectstore import Container

__all__ = ('CONTAINER_DEFAULTS', 'init_container', 'open_container', 'read_container_id')

#: The container settings aiida uses for a new storage (``psql_dos/backend.py::CONTAINER_DEFAULTS``).
CONTAINER_DEFAULTS: dict[str, Any] = {
    'pack_size_target': 4 * 1024 * 1024 * 1024,
    'loose_prefix_len': 2,
    'hash_type': 'sha256',
    'compression_algorithm': 'zlib+1',
}
_CONTAINER_FOLDERS = ('loose', 'packs', 'sandbox', 'duplicates')


def open_container(folder: str | Path) -> Container:
    """A ``Container`` object for ``folder`` (not checked; use ``read_container_id`` for that)."""
    from disk_objectstore import Container

    return Container(str(folder))


def init_container(folder: str | Path) -> str:
    """Create a new, empty container with aiida's defaults and return its ``container_id``."""
    container = open_container(folder)
    container.init_container(clear=True, **CONTAINER_DEFAULTS)
    try:
        return container.container_id
    finally:
        container.close()


def read_container_id(folder: str | Path) -> str:
    """The ``container_id`` of the container in ``folder``, read from its ``config.json`` without importing it.

    Raises ``UnreachableStorage`` if the container is missing or incomplete, ``CorruptStorage`` if its
    configuration cannot be parsed.
    """
    folder = Path(folder)
    config_path = folder / 'config.json'
    missing = [name for name in _CONTAINER_FOLDERS if not (folder / name).is_dir()]
    if not config_path.is_file() or missing:
        what = f'its folders {missing}' if missing else 'its config.json'
        raise UnreachableStorage(
            f'the repository container {str(folder)!r} is missing {what}; restore the container from a backup '
            'or point the profile at the right storage folder'
        )
    try:
        config = json.loads(config_path.read_text('utf-8'))
        container_id = config['container_id']
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptStorage(
            f'the repository container configuration {str(config_path)!r} cannot be read ({exc!r}); '
            'restore it from a backup'
        ) from exc
    if not isinstance(container_id, str):
        raise CorruptStorage(f'the container id in {str(config_path)!r} is not a string: {container_id!r}')
    return container_id
