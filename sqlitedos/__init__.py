"""sqlitedos: AiiDA's SQLite storage on the stdlib ``sqlite3`` module and disk-objectstore.

On-disk compatible with aiida-core 2.9 (storage folders and ``.aiida`` archives), with aiida's public API names.
Importing it loads no heavy module: disk-objectstore (and with it SQLAlchemy) is imported on first container use.
"""

from __future__ import annotations

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
__version__ = '0.1.0'
