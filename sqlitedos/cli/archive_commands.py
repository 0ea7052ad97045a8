"""``sqlitedos archive create|import|inspect``: aiida-core ``.aiida`` archives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sqlitedos.cli.common import (
    JSON_OPTION,
    PATH_ARG,
    PROGRESS_OPTION,
    cli,
    echo_data,
    open_storage,
    progress_bars,
    resolve_node_pk,
    timed,
)


@cli.group()
def archive() -> None:
    """Create, import and inspect .aiida archives (aiida-core's format)."""


def _archive_module() -> Any:
    try:
        import sqlitedos.archive as module
    except ImportError as exc:  # pragma: no cover - only while the archive package is being built
        raise NotImplementedError(f'archives are not available in this build of sqlitedos ({exc})') from exc
    return module


@archive.command('create')
@PROGRESS_OPTION
@PATH_ARG
@click.argument('output', type=click.Path(dir_okay=False, path_type=Path))
@click.option('--all', 'everything', is_flag=True, help='Export the whole storage.')
@click.option(
    '--nodes',
    multiple=True,
    metavar='PK|UUID',
    help='Nodes to export (with their provenance); repeatable, or comma separated.',
)
@click.option(
    '--groups', multiple=True, metavar='PK', help='Groups to export (with their nodes); repeatable, or comma separated.'
)
@click.option('--overwrite', is_flag=True, help='Replace OUTPUT if it exists.')
@click.pass_context
def archive_create(
    ctx: click.Context,
    path: Path,
    output: Path,
    everything: bool,
    nodes: tuple[str, ...],
    groups: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Export the storage at PATH (or part of it) to the archive OUTPUT."""
    module = _archive_module()
    node_ids = [item for text in nodes for item in text.split(',') if item]
    group_ids = [item for text in groups for item in text.split(',') if item]
    if everything == bool(node_ids or group_ids):
        raise click.UsageError('give either --all, or --nodes and/or --groups')
    if output.is_file() and not output.is_symlink() and not overwrite:
        raise click.ClickException(f'the archive {str(output)!r} already exists: pass --overwrite to replace it')
    with (
        open_storage(path, read_only=True, default_user=False) as storage,
        progress_bars(ctx) as bars,
        timed() as elapsed,
    ):
        entities = None
        if not everything:
            entities = [('node', resolve_node_pk(storage, item)) for item in node_ids]
            entities += [('group', int(item)) for item in group_ids]
        target = module.create_archive(storage, output, entities, overwrite=overwrite, progress=bars)
    click.echo(f'Wrote {target} ({target.stat().st_size} bytes) in {elapsed():.2f} s')


@archive.command('import')
@PROGRESS_OPTION
@PATH_ARG
@click.argument('archive_path', metavar='ARCHIVE', type=click.Path(exists=True, path_type=Path))
@click.pass_context
def archive_import(ctx: click.Context, path: Path, archive_path: Path) -> None:
    """Import ARCHIVE (an .aiida file) into the storage at PATH."""
    module = _archive_module()
    with open_storage(path) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        before = storage.nodes.count()
        group = module.import_archive(storage, archive_path, progress=bars)
        after = storage.nodes.count()
    where = f' (import group pk {group})' if group is not None else ''
    click.echo(f'Imported {archive_path}: {after - before} new node(s){where} in {elapsed():.2f} s')


@archive.command('inspect')
@PROGRESS_OPTION
@click.argument('archive_path', metavar='ARCHIVE', type=click.Path(exists=True, path_type=Path))
@JSON_OPTION
def archive_inspect(archive_path: Path, as_json: bool) -> None:
    """Show the metadata and content counts of ARCHIVE."""
    from sqlitedos.storage.sqlite_zip import SqliteZipBackend

    storage = SqliteZipBackend(SqliteZipBackend.create_profile(archive_path))
    with storage:
        data = {'path': str(archive_path.absolute()), 'metadata': storage.metadata, **storage.get_info(detailed=False)}
    echo_data(data, as_json)
