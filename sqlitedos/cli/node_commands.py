"""``sqlitedos node show|cat``: one node of a storage folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sqlitedos.cli.common import (
    JSON_OPTION,
    PATH_ARG,
    PROGRESS_OPTION,
    cell,
    cli,
    echo_json,
    open_storage,
    resolve_node_pk,
)
from sqlitedos.exceptions import NotExistent
from sqlitedos.storage.sqlite_dos import SqliteDosStorage


@cli.group()
def node() -> None:
    """Look at one node."""


def node_summary(storage: SqliteDosStorage, pk: int) -> dict[str, Any]:
    """Everything ``node show`` prints about one node."""
    from sqlitedos.repository.tree import flatten

    node = storage.nodes.get(pk)
    columns = {name: getattr(node, name) for name in NODE_COLUMNS[1:-2]}
    computer = node.computer
    links = {
        direction: [
            {
                'pk': link.node.pk,
                'node_type': link.node.node_type,
                'link_type': link.link_type.value,
                'link_label': link.link_label,
            }
            for link in links
        ]
        for direction, links in (('incoming', node.get_incoming()), ('outgoing', node.get_outgoing()))
    }
    files = {name: key for name, key in flatten(node.repository_metadata or {}).items() if key is not None}
    return {
        'pk': node.pk,
        **columns,
        'user': node.user.email,
        'computer': computer.label if computer is not None else None,
        'attributes': node.attributes,
        'extras': node.extras,
        **links,
        'files': files,
    }


NODE_COLUMNS = ('pk', 'uuid', 'node_type', 'process_type', 'label', 'description', 'ctime', 'mtime', 'user', 'computer')


@node.command('show')
@PROGRESS_OPTION
@PATH_ARG
@click.argument('identifier', metavar='PK|UUID')
@JSON_OPTION
def node_show(path: Path, identifier: str, as_json: bool) -> None:
    """Show a node of the storage at PATH: columns, attributes, extras, links and files."""
    with open_storage(path, read_only=True, default_user=False) as storage:
        summary = node_summary(storage, resolve_node_pk(storage, identifier))
    if as_json:
        echo_json(summary)
        return
    for name in NODE_COLUMNS:
        click.echo(f'{name + ":":<14}{"" if summary[name] is None else summary[name]}')
    for name in ('attributes', 'extras'):
        click.echo(f'{name}:')
        for key, value in sorted(summary[name].items()):
            click.echo(f'  {key}: {cell(value)}')
    for direction in ('incoming', 'outgoing'):
        click.echo(f'{direction} links:')
        for link in summary[direction]:
            click.echo(f'  {link["link_type"]:<11} {link["link_label"]:<20} {link["pk"]:>6}  {link["node_type"]}')
    click.echo('files:')
    for name, key in summary['files'].items():
        click.echo(f'  {name}  ({key[:12]}…)')


@node.command('cat')
@PROGRESS_OPTION
@PATH_ARG
@click.argument('identifier', metavar='PK|UUID')
@click.argument('filename', metavar='FILE')
def node_cat(path: Path, identifier: str, filename: str) -> None:
    """Write the content of FILE of a node of the storage at PATH to stdout."""
    with open_storage(path, read_only=True, default_user=False) as storage:
        summary = node_summary(storage, resolve_node_pk(storage, identifier))
        key = summary['files'].get(filename.strip('/'))
        if key is None:
            raise NotExistent(
                f'node {summary["pk"]} has no file {filename!r}; its files: {", ".join(summary["files"]) or "none"}'
            )
        sys.stdout.flush()
        out = sys.stdout.buffer
        with storage.get_repository().open(key) as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b''):
                out.write(chunk)
        out.flush()
