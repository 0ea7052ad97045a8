"""Profiles in aiida's configuration shape, and each storage's validated configuration ``Model``."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlitedos.exceptions import ConfigurationError

__all__ = ('Profile', 'StorageModel', 'TempStorageModel', 'ZipStorageModel')


class Profile:
    """A named profile: which storage backend, its configuration, and the default user's email.

    ``dictionary`` has the shape of a profile entry of aiida's ``config.json``::

        {'storage': {'backend': 'core.sqlite_dos', 'config': {'filepath': '/abs/path'}},
         'process_control': {'backend': None, 'config': {}},
         'default_user_email': 'me@lab.org', 'options': {}, 'PROFILE_UUID': '<hex>'}
    """

    def __init__(self, name: str, dictionary: Mapping[str, Any]) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f'a profile needs a non-empty name, got {name!r}')
        storage = dictionary.get('storage')
        if not isinstance(storage, Mapping) or 'backend' not in storage:
            raise ConfigurationError(
                f"profile {name!r} has no 'storage' entry with a 'backend'; expected "
                "{'storage': {'backend': 'core.sqlite_dos', 'config': {'filepath': ...}}}"
            )
        self._name = name
        self._dictionary: dict[str, Any] = copy.deepcopy(dict(dictionary))
        self._dictionary['storage'].setdefault('config', {})
        self._dictionary.setdefault('process_control', {'backend': None, 'config': {}})
        self._dictionary.setdefault('options', {})
        self._dictionary.setdefault('PROFILE_UUID', uuid4_hex())

    def __repr__(self) -> str:
        return f'Profile<{self._name!r} ({self.storage_backend})>'

    @property
    def name(self) -> str:
        return self._name

    @property
    def uuid(self) -> str:
        return self._dictionary['PROFILE_UUID']

    @property
    def dictionary(self) -> dict[str, Any]:
        """A copy of the profile in aiida's configuration shape."""
        return copy.deepcopy(self._dictionary)

    @property
    def storage_backend(self) -> str:
        return self._dictionary['storage']['backend']

    @property
    def storage_config(self) -> dict[str, Any]:
        return self._dictionary['storage']['config']

    @property
    def default_user_email(self) -> str | None:
        return self._dictionary.get('default_user_email')

    @property
    def options(self) -> dict[str, Any]:
        return self._dictionary['options']

    @property
    def process_control_backend(self) -> str | None:
        return self._dictionary['process_control'].get('backend')


def filepath_is_absolute(value: str | Path) -> str:
    """Validate a storage path and return it absolute and resolved, as aiida's ``Model`` does."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigurationError(f'filepath must be a non-empty path, got {value!r}')
    return str(Path(value).expanduser().resolve())


@dataclass
class StorageModel:
    """Configuration of a folder storage (``core.sqlite_dos``): the storage folder."""

    filepath: str

    def __post_init__(self) -> None:
        self.filepath = filepath_is_absolute(self.filepath)

    filepath_is_absolute = staticmethod(filepath_is_absolute)


def _new_temp_folder() -> str:
    import tempfile  # only for a temp storage without a filepath: folder storages never need it

    return tempfile.mkdtemp()


@dataclass
class TempStorageModel:
    """Configuration of the in-memory storage (``core.sqlite_temp``): where its sandbox repository lives."""

    filepath: str = field(default_factory=_new_temp_folder)

    def __post_init__(self) -> None:
        self.filepath = filepath_is_absolute(self.filepath)

    filepath_is_absolute = staticmethod(filepath_is_absolute)


@dataclass
class ZipStorageModel:
    """Configuration of the archive storage (``core.sqlite_zip``): an ``.aiida`` file or its unpacked folder."""

    filepath: str

    def __post_init__(self) -> None:
        self.filepath = filepath_is_absolute(self.filepath)
        if not Path(self.filepath).exists():
            raise ConfigurationError(f'the archive {self.filepath!r} does not exist')

    filepath_is_absolute = staticmethod(filepath_is_absolute)


def uuid4_hex() -> str:
    """A random (version 4) uuid as 32 hex digits, like ``uuid.uuid4().hex``, without importing ``uuid``: on Python
    3.10/3.11 that imports ``platform``, ~1.5 ms of every cold start (each new profile gets one)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()
