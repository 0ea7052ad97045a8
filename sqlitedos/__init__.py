"""sqlitedos: AiiDA's SQLite storage on the stdlib ``sqlite3`` module and disk-objectstore.

On-disk compatible with aiida-core 2.9 (storage folders and ``.aiida`` archives), with aiida's public API names.
Importing it loads nothing: each public name is imported on first use (``from sqlitedos import SqliteDosStorage``
loads the folder storage only), and disk-objectstore (with SQLAlchemy) on first container use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)

if TYPE_CHECKING:
    from typing import Any

    from sqlitedos import exceptions
    from sqlitedos.links import LinkType
    from sqlitedos.profile import Profile
    from sqlitedos.query.builder import QueryBuilder
    from sqlitedos.storage.sqlite_dos import SqliteDosStorage
    from sqlitedos.storage.sqlite_temp import SqliteTempBackend
    from sqlitedos.storage.sqlite_zip import SqliteZipBackend
    from sqlitedos.tables import EntityTypes

__all__ = (
    'EntityTypes',
    'LinkType',
    'Profile',
    'QueryBuilder',
    'SqliteDosStorage',
    'SqliteTempBackend',
    'SqliteZipBackend',
    'exceptions',
)
#: The one place the version is written: pyproject.toml reads it from here (``[tool.hatch.version]``).
__version__ = '0.1.0'

#: public name -> the module that defines it
_LAZY = {
    'EntityTypes': 'sqlitedos.tables',
    'LinkType': 'sqlitedos.links',
    'Profile': 'sqlitedos.profile',
    'QueryBuilder': 'sqlitedos.query.builder',
    'SqliteDosStorage': 'sqlitedos.storage.sqlite_dos',
    'SqliteTempBackend': 'sqlitedos.storage.sqlite_temp',
    'SqliteZipBackend': 'sqlitedos.storage.sqlite_zip',
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it, so later lookups cost nothing."""
    # __import__ rather than importlib.import_module: the same import, and ``python -X importtime`` times it.
    if name == 'exceptions':
        value: Any = __import__('sqlitedos.exceptions', fromlist=('*',))
    elif name in _LAZY:
        value = getattr(__import__(_LAZY[name], fromlist=(name,)), name)
    else:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
