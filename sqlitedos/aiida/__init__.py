"""sqlitedos as an aiida-core storage plugin (the optional extra ``sqlitedos[aiida]``).

The only package of sqlitedos that imports aiida: aiida-core's abstract storage interfaces implemented over
sqlitedos' own classes. Entry points (group ``aiida.storage``): ``sqlitedos.dos`` (a storage folder, the
configuration keys of ``core.sqlite_dos``) and ``sqlitedos.temp`` (in memory).
"""

from __future__ import annotations

from sqlitedos.aiida.storage import SqliteDosStorage, SqliteTempStorage

__all__ = ('SqliteDosStorage', 'SqliteTempStorage')
