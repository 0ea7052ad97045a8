"""Helpers to open storages with aiida-core itself (these tests run only in `.venv-aiida`, see `make interop`).

aiida reads its configuration folder when it is first imported, so ``AIIDA_PATH`` is pointed at a private temporary
folder before anything imports aiida: the tests never touch a user's ``~/.aiida``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

_AIIDA_CONFIG = tempfile.mkdtemp(prefix='sqlitedos-aiida-config-')
os.environ['AIIDA_PATH'] = _AIIDA_CONFIG
atexit.register(shutil.rmtree, _AIIDA_CONFIG, ignore_errors=True)

with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # "Creating AiiDA configuration folder": expected, it is our private folder
    import aiida  # noqa: F401
    from aiida.manage import get_manager
    from aiida.manage.configuration.profile import Profile as AiidaProfile


def aiida_profile(path: Path | str, default_user_email: str | None = None, name: str = 'interop') -> AiidaProfile:
    """An aiida-core profile for the ``core.sqlite_dos`` storage folder at ``path`` (no broker)."""
    return AiidaProfile(
        name,
        {
            'default_user_email': default_user_email,
            'storage': {'backend': 'core.sqlite_dos', 'config': {'filepath': str(path)}},
            'process_control': {'backend': None, 'config': {}},
        },
    )


@contextlib.contextmanager
def aiida_loaded(path: Path | str, default_user_email: str | None = None) -> Iterator[Any]:
    """Load the storage folder at ``path`` as aiida's current profile; yield aiida's storage object, then unload.

    Inside the block aiida's ORM (``aiida.orm``) works on that folder exactly as it would for a ``verdi`` profile.
    """
    manager = get_manager()
    manager.load_profile(aiida_profile(path, default_user_email), allow_switch=True)
    try:
        yield manager.get_profile_storage()
    finally:
        manager.unload_profile()


@contextlib.contextmanager
def aiida_storage(path: Path | str) -> Iterator[Any]:
    """aiida-core's own ``SqliteDosStorage`` on the folder at ``path`` (no profile loaded), closed afterwards."""
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    storage = AiidaSqliteDosStorage(aiida_profile(path))
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture
def make_aiida_profile() -> Callable[..., AiidaProfile]:
    """``make_aiida_profile(path, email=None)``: an aiida-core profile for the storage folder at ``path``."""
    return aiida_profile


@pytest.fixture
def load_in_aiida() -> Callable[..., AbstractContextManager[Any]]:
    """``with load_in_aiida(path, email) as storage:`` runs aiida's ORM on the storage folder at ``path``."""
    return aiida_loaded


@pytest.fixture
def open_in_aiida() -> Callable[[Path | str], AbstractContextManager[Any]]:
    """``with open_in_aiida(path) as storage:`` opens the folder with aiida's ``SqliteDosStorage`` directly."""
    return aiida_storage
