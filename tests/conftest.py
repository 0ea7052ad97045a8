"""Shared fixtures: the aiida-made fixture data, and fresh storages of each kind."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI runs a fixed set of examples (`.ci/run` sets SQLITEDOS_CI=1), so a landing is never blocked by a new random
# draw; everywhere else each run explores new examples, which is how the property tests keep finding bugs.
settings.register_profile('ci', derandomize=True, print_blob=True)
if os.environ.get('SQLITEDOS_CI'):
    settings.load_profile('ci')

FIXTURES = Path(__file__).parent / 'fixtures' / 'aiida-2.9.4'

# The interop tests need aiida-core, which lives in its own venv (`make interop`); skip collecting them elsewhere.
# (Only look for it: importing aiida here would read its configuration before tests/interop/conftest.py sets it.)
if importlib.util.find_spec('aiida') is None:
    collect_ignore = ['interop']


@pytest.fixture(scope='session')
def manifest() -> dict[str, Any]:
    """aiida-core's own report of the fixture content (``manifest.json``)."""
    return json.loads((FIXTURES / 'manifest.json').read_text('utf-8'))


@pytest.fixture(scope='session')
def postgres_semantics() -> Any:
    """Query dicts with aiida-core's answers on PostgreSQL and on SQLite (``postgres-semantics.json``)."""
    return json.loads((FIXTURES / 'postgres-semantics.json').read_text('utf-8'))


def unpack_fixture_profile(destination: Path) -> Path:
    """Unpack the aiida-made storage folder into ``destination`` and return the folder path."""
    with tarfile.open(FIXTURES / 'profile.tar') as archive:
        archive.extractall(destination, filter='data')
    return destination / 'profile'


@pytest.fixture
def fixture_profile_path(tmp_path: Path) -> Path:
    """A private copy of the aiida-made storage folder."""
    return unpack_fixture_profile(tmp_path)


@pytest.fixture
def fixture_archive_path(tmp_path: Path) -> Path:
    """A private copy of the aiida-made archive."""
    target = tmp_path / 'archive.aiida'
    shutil.copyfile(FIXTURES / 'archive.aiida', target)
    return target


@pytest.fixture
def fixture_storage(fixture_profile_path: Path) -> Iterator[Any]:
    """The aiida-made storage folder, opened with sqlitedos."""
    from sqlitedos import SqliteDosStorage

    profile = SqliteDosStorage.create_profile('fixture', filepath=fixture_profile_path)
    storage = SqliteDosStorage(profile)
    yield storage
    storage.close()


@pytest.fixture
def dos_storage(tmp_path: Path) -> Iterator[Any]:
    """A new, empty folder storage with a default user ``user@email.com``."""
    from sqlitedos import SqliteDosStorage

    profile = SqliteDosStorage.create_profile(
        'test', filepath=tmp_path / 'storage', default_user_email='user@email.com'
    )
    SqliteDosStorage.initialise(profile)
    storage = SqliteDosStorage(profile)
    yield storage
    storage.close()


@pytest.fixture
def temp_storage(tmp_path: Path) -> Iterator[Any]:
    """A new in-memory storage with a default user ``user@email.com``."""
    from sqlitedos import SqliteTempBackend

    storage = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=str(tmp_path / 'sandbox')))
    yield storage
    storage.close()


@pytest.fixture(params=['dos', 'temp'])
def storage(request: pytest.FixtureRequest) -> Any:
    """Each writable storage kind in turn: the folder storage and the temp backend."""
    return request.getfixturevalue(f'{request.param}_storage')
