"""``sqlitedos demo``: a small provenance graph in a new storage folder, and what sqlitedos does with it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sqlitedos.cli.common import PROGRESS_OPTION, cli, progress_bars, render_table, render_tree, timed
from sqlitedos.cli.node_commands import node_summary
from sqlitedos.exceptions import NotExistent
from sqlitedos.storage.sqlite_dos import SqliteDosStorage

if TYPE_CHECKING:
    from sqlitedos.archive.format import Progress
    from sqlitedos.entities.nodes import BackendNode

DEMO_EMAIL = 'demo@sqlitedos.org'


def build_demo_graph(storage: SqliteDosStorage) -> dict[str, Any]:
    """x + y -> add (a calculation, run by a workflow) -> sum, with files on the nodes, in a group."""
    from sqlitedos.links import LinkType

    user = storage.default_user
    if user is None:
        raise NotExistent(f'the storage has no user {storage.profile.default_user_email!r} to own the demo graph')

    def make(node_type: str, label: str, **attributes: Any) -> BackendNode:
        entity = storage.nodes.create(node_type=node_type, user=user, label=label)
        for key, value in attributes.items():
            entity.set_attribute(key, value)
        return entity

    x = make('data.core.int.Int.', 'x', value=3).store()
    y = make('data.core.int.Int.', 'y', value=4).store()
    work = make(
        'process.workflow.workchain.WorkChainNode.',
        'add_and_report',
        process_state='finished',
        exit_status=0,
        sealed=True,
    )
    work.process_type = 'aiida.workflows:core.arithmetic.add_multiply'
    work.store(links=[(x, LinkType.INPUT_WORK, 'x'), (y, LinkType.INPUT_WORK, 'y')])
    calc = make('process.calculation.calcjob.CalcJobNode.', 'add', process_state='finished', exit_status=0, sealed=True)
    calc.process_type = 'aiida.calculations:core.arithmetic.add'
    calc.repository.put_object_from_bytes(b'echo $((3 + 4))\n', 'aiida.in')
    calc.repository.put_object_from_bytes(b'#!/bin/bash\nexec bash < aiida.in > aiida.out\n', '_aiidasubmit.sh')
    calc.store(links=[(x, LinkType.INPUT_CALC, 'x'), (y, LinkType.INPUT_CALC, 'y'), (work, LinkType.CALL_CALC, 'CALL')])
    retrieved = make('data.core.folder.FolderData.', 'retrieved')
    retrieved.repository.put_object_from_bytes(b'7\n', 'aiida.out')
    retrieved.repository.put_object_from_bytes(b'', 'logs/scheduler.err')
    retrieved.store(links=[(calc, LinkType.CREATE, 'retrieved')])
    total = make('data.core.int.Int.', 'sum', value=7)
    total.store(links=[(calc, LinkType.CREATE, 'sum'), (work, LinkType.RETURN, 'sum')])
    group = storage.groups.create(label='demo', user=user, type_string='core').store()
    group.add_nodes([x, y, work, calc, retrieved, total])
    return {'x': x, 'y': y, 'work': work, 'calc': calc, 'retrieved': retrieved, 'sum': total, 'group': group}


def demo_queries(storage: SqliteDosStorage) -> list[tuple[str, list[str], list[list[Any]]]]:
    """A few queries on the demo graph: (title, headers, rows)."""
    from sqlitedos.query.builder import QueryBuilder

    found = (
        QueryBuilder(backend=storage)
        .append(
            entity_type='data.core.int.Int.',
            orm_base='node',
            tag='i',
            filters={'attributes.value': {'>': 3}},
            project=['id', 'label', 'attributes.value'],
        )
        .order_by({'i': ['id']})
        .all()
    )
    outputs = (
        QueryBuilder(backend=storage)
        .append(
            entity_type='process.calculation.CalculationNode.',
            orm_base='node',
            tag='calc',
            project=['label'],
        )
        .append(
            entity_type='data.Data.',
            orm_base='node',
            with_incoming='calc',
            tag='out',
            edge_project=['label'],
            project=['id', 'node_type'],
        )
        .order_by({'out': ['id']})
        .all()
    )
    provenance = (
        QueryBuilder(backend=storage)
        .append(
            entity_type='data.core.int.Int.',
            orm_base='node',
            tag='s',
            filters={'label': 'sum'},
        )
        .append(
            entity_type='',
            orm_base='node',
            with_descendants='s',
            tag='a',
            project=['id', 'label', 'node_type'],
        )
        .order_by({'a': ['id']})
        .all()
    )
    return [
        ('Int nodes with value > 3', ['id', 'label', 'value'], found),
        ('outputs of calculations', ['calculation', 'id', 'node_type', 'link label'], outputs),
        ("ancestors of 'sum'", ['id', 'label', 'node_type'], provenance),
    ]


def run_demo(path: Path, echo: Callable[[str], None], progress: Progress | None) -> None:
    """The demo: a storage folder with a small graph, info, queries, an archive round trip, a verify."""
    from sqlitedos.verify import verify

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f'{str(path)!r} already exists: the demo builds its storage in a new or empty folder')
    with timed() as elapsed:
        profile = SqliteDosStorage.create_profile('demo', filepath=path, default_user_email=DEMO_EMAIL)
        SqliteDosStorage.initialise(profile)
        echo(f'== Created storage folder {profile.storage_config["filepath"]}')
        storage = SqliteDosStorage(profile)
        with storage:
            graph = build_demo_graph(storage)
            echo(
                f"   stored {len(graph) - 1} nodes (x + y -> add -> sum, a workflow, a folder of files) in group 'demo'"
            )
            echo('\n== sqlitedos info')
            echo('\n'.join(render_tree(storage.get_info(detailed=False))))
            for title, headers, rows in demo_queries(storage):
                echo(f'\n== Query: {title}')
                echo(render_table(headers, rows))
            calc = node_summary(storage, graph['calc'].pk)
            echo(f'\n== sqlitedos node show {path} {calc["pk"]}  (files)')
            echo('\n'.join(f'   {name}' for name in calc['files']))
            with tempfile.TemporaryDirectory(prefix='sqlitedos-demo-') as workdir:
                demo_archive(storage, Path(workdir) / 'demo.aiida', echo, progress)
        report = verify(path)
        echo(f'\n== sqlitedos verify: {"OK" if report.ok else report.render()}')
        echo(f'\nDone in {elapsed():.2f} s. Try: sqlitedos info {path}')


def demo_archive(
    storage: SqliteDosStorage, target: Path, echo: Callable[[str], None], progress: Progress | None
) -> None:
    """Export the storage to an archive and import it into a fresh in-memory storage."""
    try:
        from sqlitedos.archive import create_archive, import_archive
    except ImportError:  # pragma: no cover - only while the archive package is being built
        echo('\n== (archives are not available in this build: skipping the export/import step)')
        return
    from sqlitedos.storage.sqlite_temp import SqliteTempBackend

    archive_path = create_archive(storage, target, overwrite=True, progress=progress)
    echo(f'\n== sqlitedos archive create: exported the storage to an archive ({archive_path.stat().st_size} bytes)')
    temp = SqliteTempBackend(SqliteTempBackend.create_profile(default_user_email=DEMO_EMAIL))
    try:
        group = import_archive(temp, archive_path, progress=progress)
        counts = {name: value['count'] for name, value in temp.get_info()['entities'].items()}
        echo(
            f'   imported it into an in-memory SqliteTempBackend (import group pk {group}): '
            + ', '.join(f'{count} {name.lower()}' for name, count in counts.items() if count)
        )
    finally:
        temp.close()


@cli.command()
@PROGRESS_OPTION
@click.argument('path', required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def demo(ctx: click.Context, path: Path | None) -> None:
    """Build a small provenance graph in a new storage folder at PATH and show what sqlitedos does with it."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix='sqlitedos-demo-')) / 'storage'
    with progress_bars(ctx) as bars:
        run_demo(path, click.echo, bars)
