"""Vendoring: a copy of the package that works from ``sys.path`` alone (a folder or a zip), without pip.

``vendor(dest)`` writes ``dest/sqlitedos/`` with the schema files and the LICENSE inside it (as in the wheel), so
``importlib.resources`` finds them wherever the copy goes. The stdlib is enough for the temp backend, queries and
archives; folder storages need disk-objectstore importable beside it, the command line click.

``python -m sqlitedos vendor DIR`` and ``make vendor DEST=DIR`` run it; ``python -m sqlitedos.vendor DIR`` runs it
from a source checkout without installing anything.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlitedos.exceptions import InvalidOperation

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ('vendor',)

PACKAGE = 'sqlitedos'
#: Left out of the copy: compiled files are rebuilt by whichever Python imports the copy.
SKIPPED = ('__pycache__',)
SKIPPED_SUFFIXES = ('.pyc', '.pyo')


def vendor(dest: str | Path, *, replace: bool = False) -> Path:
    """Write the package to ``dest/sqlitedos/`` with its schema inside; returns that folder.

    :param replace: replace an existing ``dest/sqlitedos/`` if it is a previous copy (a package with a schema).
    """
    from importlib import resources

    from sqlitedos.migrate import schema_files

    dest = Path(dest)
    target = dest / PACKAGE
    if target.exists() or target.is_symlink():
        if not replace:
            raise InvalidOperation(f'{target} exists: remove it first, or pass --replace (replace=True) to update it')
        if target.is_symlink() or not (target / '__init__.py').is_file() or not (target / 'schema').is_dir():
            raise InvalidOperation(
                f'{target} is not a vendored copy of sqlitedos (no __init__.py and schema/): not replaced'
            )
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f'.{PACKAGE}.vendor-partial'
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _copy_tree(resources.files(PACKAGE), staging)
        if not (staging / 'schema').is_dir():
            _copy_tree(schema_files(), staging / 'schema')
        checkout_license = Path(__file__).resolve().parent.parent / 'LICENSE'
        if not (staging / 'LICENSE').is_file() and checkout_license.is_file():
            shutil.copyfile(checkout_license, staging / 'LICENSE')  # MIT: the notice goes with every copy
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _copy_tree(source: Traversable, target: Path) -> None:
    """Copy a resource folder (a real folder or one inside a zip) to ``target``, without compiled files."""
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name in SKIPPED or entry.name.endswith(SKIPPED_SUFFIXES):
            continue
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def main(argv: list[str] | None = None) -> int:
    """``python -m sqlitedos.vendor DIR [--replace]``: the same as ``sqlitedos vendor``, with the stdlib only."""
    args = sys.argv[1:] if argv is None else argv
    replace = '--replace' in args
    paths = [arg for arg in args if arg != '--replace']
    if len(paths) != 1 or paths[0].startswith('-'):
        print('usage: python -m sqlitedos.vendor DIR [--replace]', file=sys.stderr)
        return 2
    try:
        target = vendor(paths[0], replace=replace)
    except (InvalidOperation, OSError) as exc:
        print(f'Error: {exc}', file=sys.stderr)
        return 1
    print(f'Wrote {target}: put {target.parent} on sys.path (or zip it and put the zip there)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
