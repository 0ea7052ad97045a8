"""The ``sqlitedos`` command line (a stdlib placeholder until the click-based command lands)."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlitedos.storage.sqlite_dos import SqliteDosStorage

USAGE = 'usage: python -m sqlitedos demo PATH'


def demo(path: Path) -> None:
    """Initialise a storage folder at ``path`` and print what it is."""
    profile = SqliteDosStorage.create_profile('demo', filepath=path, default_user_email='demo@sqlitedos.org')
    created = SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        print(f'{"created" if created else "opened"} {storage}')
        print(f'  schema version: {storage.version()}')
        print(f'  database:       {storage.filepath_database}')
        print(f'  container:      {storage.filepath_container}')
        users = storage.get_session().execute('SELECT email FROM db_dbuser ORDER BY id').fetchall()
        print(f'  users:          {", ".join(email for (email,) in users)}')


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != 'demo':
        sys.exit(USAGE)
    demo(Path(args[1]))
