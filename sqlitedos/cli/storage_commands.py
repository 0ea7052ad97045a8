"""The commands on a whole storage folder: ``init``, ``info``, ``query``, ``maintain``, ``backup``, ``verify``,
``migrate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import click

from sqlitedos.cli.common import (
    DEFAULT_EMAIL,
    DEFAULT_PROJECTIONS,
    JSON_OPTION,
    PATH_ARG,
    PROGRESS_OPTION,
    cli,
    echo_data,
    echo_json,
    open_storage,
    parse_filter,
    progress_bars,
    render_table,
    render_tree,
    timed,
)
from sqlitedos.storage.sqlite_dos import SqliteDosStorage


@cli.command()
@PROGRESS_OPTION
@PATH_ARG
@click.option('--email', default=DEFAULT_EMAIL, show_default=True, help='Email of the default user to create.')
def init(path: Path, email: str) -> None:
    """Create a new storage folder at PATH (an existing storage is migrated to the current schema)."""
    profile = SqliteDosStorage.create_profile('cli', filepath=path, default_user_email=email)
    created = SqliteDosStorage.initialise(profile)
    verb = 'Created' if created else 'Already a storage (now at the current schema):'
    click.echo(f'{verb} {profile.storage_config["filepath"]} (schema {SqliteDosStorage.version_head()})')


@cli.command()
@PROGRESS_OPTION
@PATH_ARG
@click.option('--detailed', is_flag=True, help='Add per-type counts and repository sizes.')
@JSON_OPTION
def info(path: Path, detailed: bool, as_json: bool) -> None:
    """Summarise the storage at PATH: entity counts and repository."""
    with open_storage(path, read_only=True, default_user=False) as storage:
        data = {'path': str(storage.filepath_root), 'schema version': storage.version(), **storage.get_info(detailed)}
    echo_data(data, as_json)


@cli.command()
@PROGRESS_OPTION
@PATH_ARG
@click.argument('query_file', required=False, type=click.File('r'))
@click.option(
    '--type',
    'entity_type',
    default=None,
    help="An entity type, e.g. 'data.core.int.Int.' (subclasses included); default: all nodes.",
)
@click.option(
    '--entity',
    'orm_base',
    default='node',
    show_default=True,
    type=click.Choice(sorted(DEFAULT_PROJECTIONS)),
    help='What to query.',
)
@click.option(
    '--filter',
    'filters',
    multiple=True,
    metavar='FIELD<op>VALUE',
    help="A filter such as 'label=x', 'attributes.value>=2', 'label~a%'; repeat to AND them.",
)
@click.option(
    '--project',
    'projections',
    multiple=True,
    metavar='FIELD',
    help="A field to show ('attributes.value', 'extras', 'ctime', ...); repeat for more.",
)
@click.option('--limit', type=click.IntRange(min=0), default=None, help='At most this many rows.')
@click.option('--order-by', default='id', show_default=True, help='Field to order by (prefix - for descending).')
@JSON_OPTION
def query(
    path: Path,
    query_file: IO[str] | None,
    entity_type: str | None,
    orm_base: str,
    filters: tuple[str, ...],
    projections: tuple[str, ...],
    limit: int | None,
    order_by: str,
    as_json: bool,
) -> None:
    """Run a query on the storage at PATH and print the rows.

    Either QUERY_FILE ('-' for stdin) holds a query dict as JSON (the shape of aiida's QueryBuilder.as_dict()),
    or the options build a one-vertex query.
    """
    from sqlitedos.query.builder import QueryBuilder

    with open_storage(path, read_only=True, default_user=False) as storage:
        if query_file is not None:
            builder = QueryBuilder.from_dict(storage, read_query_dict(query_file))
            if limit is not None:
                builder.limit(limit)
        else:
            conditions: dict[str, Any] = dict(parse_filter(text) for text in filters)
            if len(conditions) < len(filters):  # two filters on one field: combine them
                conditions = {'and': [dict([parse_filter(text)]) for text in filters]}
            descending = order_by.startswith('-')
            builder = QueryBuilder(backend=storage).append(
                entity_type=entity_type or '',
                orm_base=orm_base,
                tag='row',
                filters=conditions,
                project=list(projections) or DEFAULT_PROJECTIONS[orm_base],
            )
            builder.order_by({'row': [{order_by.lstrip('-'): {'order': 'desc' if descending else 'asc'}}]})
            builder.limit(limit)
        results = list(builder.iterdict())
    echo_rows(results, as_json)


def read_query_dict(handle: IO[str]) -> dict[str, Any]:
    """A query dict from an open JSON file; ``BadParameter`` if it is not one."""
    try:
        query_dict = json.load(handle)
    except ValueError as exc:
        raise click.BadParameter(f'not a JSON query dict: {exc}', param_hint='QUERY_FILE') from exc
    if not isinstance(query_dict, dict):
        raise click.BadParameter('the JSON must be an object (a query dict)', param_hint='QUERY_FILE')
    return query_dict


def echo_rows(results: list[dict[str, dict[str, Any]]], as_json: bool) -> None:
    """Print ``iterdict`` results as a table (or JSON objects), one column per projection."""
    if not results:
        headers: list[str] = []
    else:
        tags = list(results[0])
        headers = [key if len(tags) == 1 else f'{tag}.{key}' for tag in tags for key in results[0][tag]]
    rows = [[value for tag in result for value in result[tag].values()] for result in results]
    if as_json:
        echo_json([dict(zip(headers, row)) for row in rows])
    elif rows:
        click.echo(render_table(headers, rows))
        click.echo(f'({len(rows)} row{"s" if len(rows) != 1 else ""})')
    else:
        click.echo('(no rows)')


@cli.command()
@PROGRESS_OPTION
@PATH_ARG
@click.option('--full', is_flag=True, help='Also delete unreferenced objects, repack and vacuum (needs exclusive use).')
@click.option('--dry-run', is_flag=True, help='Report what would be done, change nothing.')
@click.option('--compress', is_flag=True, help='Compress objects while packing them.')
@click.option(
    '--no-pack',
    is_flag=True,
    help='Write no pack (no packing of loose objects, no repack): only delete what is unreferenced or already '
    'packed. The way out when the disk is full.',
)
@click.pass_context
def maintain(ctx: click.Context, path: Path, full: bool, dry_run: bool, compress: bool, no_pack: bool) -> None:
    """Pack the repository of the storage at PATH (and with --full reclaim space)."""
    options: dict[str, Any] = {'pack_loose': False, 'do_repack': False if full else None} if no_pack else {}
    with open_storage(path, default_user=False) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        report = storage.maintain(full=full, dry_run=dry_run, compress=compress, progress=bars, **options)
    click.echo('\n'.join(render_tree(report or {})))
    click.echo(f'{"Dry run" if dry_run else "Maintenance"} done in {elapsed():.2f} s')


@cli.command('backup')
@PROGRESS_OPTION
@PATH_ARG
@click.argument('dest', type=click.Path(file_okay=False, path_type=Path))
@click.option(
    '--keep',
    type=click.IntRange(min=0),
    default=None,
    help='Keep this many previous backups besides the new one (default: all).',
)
@click.pass_context
def backup_command(ctx: click.Context, path: Path, dest: Path, keep: int | None) -> None:
    """Back the storage at PATH up into DEST (incremental, aiida's layout; no rsync needed)."""
    from sqlitedos.backup import backup

    with open_storage(path, read_only=True) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        folder = backup(storage, dest, keep=keep, progress=bars)
    click.echo(f'Backed up {path} to {folder} in {elapsed():.2f} s')


@cli.command('verify')
@PROGRESS_OPTION
@PATH_ARG
@click.option('--repair', is_flag=True, help='Delete the container objects no node references.')
@JSON_OPTION
@click.pass_context
def verify_command(ctx: click.Context, path: Path, repair: bool, as_json: bool) -> None:
    """Check the storage at PATH: database integrity, schema, repository uuid, files and links. Exit 1 on problems."""
    from sqlitedos.verify import verify

    with progress_bars(ctx) as bars:
        report = verify(path, repair=repair, progress=bars)
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(report.render())
    if not report.ok:
        ctx.exit(1)


@cli.command()
@PROGRESS_OPTION
@PATH_ARG
def migrate(path: Path) -> None:
    """Migrate the storage at PATH to the current schema version."""
    profile = SqliteDosStorage.create_profile('cli', filepath=path)
    before = SqliteDosStorage.version_profile(profile)
    SqliteDosStorage.migrate(profile)
    after = SqliteDosStorage.version_profile(profile)
    if before == after:
        click.echo(f'{path} is already at the current schema version {after}')
    else:
        click.echo(f'Migrated {path} from {before} to {after}')


@cli.command('vendor')
@click.argument('dest', metavar='DIR', type=click.Path(file_okay=False, path_type=Path))
@click.option('--replace', is_flag=True, help='Replace DIR/sqlitedos if it is a previous vendored copy.')
def vendor_command(dest: Path, replace: bool) -> None:
    """Copy the package, schema inside, to DIR/sqlitedos/: put DIR (or a zip of it) on sys.path to use it unpip'd."""
    from sqlitedos.vendor import vendor

    click.echo(f'Wrote {vendor(dest, replace=replace)}')
