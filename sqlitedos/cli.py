"""The ``sqlitedos`` command: create, inspect, query, archive, maintain, back up and verify storage folders.

The only module that imports ``click``. Errors print one line (``Error: ...``) and exit with status 1; long work
shows progress bars on a terminal and stays quiet in pipes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from sqlitedos import __version__
from sqlitedos.exceptions import AiidaException, MultipleObjectsError, NotExistent
from sqlitedos.storage.sqlite_dos import SqliteDosStorage

DEFAULT_EMAIL = 'aiida@localhost'
#: The columns a query shows when ``--project`` is not given, per ``orm_base``.
DEFAULT_PROJECTIONS = {
    'node': ['id', 'uuid', 'node_type', 'label'],
    'group': ['id', 'uuid', 'label', 'type_string'],
    'computer': ['id', 'uuid', 'label', 'hostname'],
    'user': ['id', 'email'],
    'comment': ['id', 'uuid', 'content'],
    'log': ['id', 'uuid', 'levelname', 'message'],
    'authinfo': ['id', 'enabled'],
}
#: ``--filter`` operators, longest first so that ``>=`` wins over ``>``.
FILTER_OPERATORS = (
    ('!=', '!=='),
    ('>=', '>='),
    ('<=', '<='),
    ('==', '=='),
    ('=', '=='),
    ('>', '>'),
    ('<', '<'),
    ('~', 'like'),
)
FILTER_PATTERN = re.compile(r'^(?P<field>[A-Za-z_][\w.]*)\s*(?P<op>!=|>=|<=|==|=|>|<|~)\s*(?P<value>.*)$', re.DOTALL)
CELL_WIDTH = 60
HANDLED_ERRORS = (AiidaException, OSError, ValueError, NotImplementedError, sqlite3.Error)


class SqlitedosGroup(click.Group):
    """A command group that turns the storage's errors into one ``Error: ...`` line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # the reader went away (`sqlitedos ... | head`): click's main exits quietly
        except HANDLED_ERRORS as exc:
            message = str(exc) or type(exc).__name__
            if isinstance(exc, KeyError) and exc.args:  # KeyError's str() adds quotes
                message = str(exc.args[0])
            raise click.ClickException(message) from exc
        except Exception as exc:
            # disk-objectstore reports a damaged container through SQLAlchemy's errors: still one line, no traceback
            if type(exc).__module__.split('.')[0] not in ('sqlalchemy', 'disk_objectstore'):
                raise
            raise click.ClickException(
                f'the repository container cannot be read ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); '
                'run `sqlitedos verify PATH`, and restore the container from a backup'
            ) from exc


# --- helpers ------------------------------------------------------------------------------------------------------


class ProgressBars:
    """A ``progress(stage, done, total)`` callback drawing one ``click.progressbar`` per stage on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._stage: str | None = None
        self._done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._bar = click.progressbar(length=max(total, 1), label=stage.ljust(20), file=sys.stderr, show_pos=True)
            self._bar.__enter__()
            self._stage, self._done = stage, 0
        self._bar.length = max(total, 1)
        self._bar.update(max(0, done - self._done))
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
            self._stage = None

    def __enter__(self) -> ProgressBars:  # noqa: PYI034 - a final class
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_bars(ctx: click.Context) -> ProgressBars:
    mode = (ctx.find_root().obj or {}).get('progress', 'auto')
    return ProgressBars(mode == 'always' or (mode == 'auto' and sys.stderr.isatty()))


def first_user_email(path: Path) -> str | None:
    """The email of the storage's first user (the one ``init`` creates), or None; never raises."""
    from sqlitedos.db import connect

    try:
        connection = connect(Path(path) / 'database.sqlite', read_only=True)
    except (AiidaException, OSError):
        return None
    try:
        row = connection.execute('SELECT email FROM db_dbuser ORDER BY id LIMIT 1').fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return row[0] if row else None


def open_storage(path: str | Path) -> SqliteDosStorage:
    """The storage folder at ``path``, opened, with its first user as the default user (as ``verdi`` profiles do)."""
    email = first_user_email(Path(path))
    return SqliteDosStorage(SqliteDosStorage.create_profile('cli', filepath=Path(path), default_user_email=email))


def to_jsonable(value: Any) -> Any:
    """Values as JSON can hold them: datetimes as ISO text, entities as their pk, paths as text."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, 'pk') and hasattr(value, 'uuid'):
        return {'pk': value.pk, 'uuid': value.uuid}
    return value


def echo_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, default=str))


def echo_data(data: dict[str, Any], as_json: bool) -> None:
    """Print nested data as JSON or as an indented tree."""
    if as_json:
        echo_json(data)
    else:
        click.echo('\n'.join(render_tree(data)))


def render_tree(value: Any, indent: int = 0) -> Iterator[str]:
    """Nested dicts as indented ``key: value`` lines."""
    for key, item in value.items():
        if isinstance(item, dict) and list(item) == ['count']:
            item = item['count']
        if isinstance(item, dict) and item:
            yield f'{"  " * indent}{key}:'
            yield from render_tree(item, indent + 1)
        else:
            yield f'{"  " * indent}{key}: {json.dumps(to_jsonable(item), default=str) if isinstance(item, (dict, list)) else item}'


def cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(to_jsonable(value), ensure_ascii=False, default=str)
    elif isinstance(value, dt.datetime):
        text = value.isoformat(sep=' ', timespec='seconds')
    elif hasattr(value, 'pk') and hasattr(value, 'uuid'):
        text = f'<{type(value).__name__} {value.pk}>'
    else:
        text = '' if value is None else str(value)
    text = text.replace('\n', ' ')
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + '…'


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table: a header, a rule, one line per row."""
    texts = [[cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in texts)]) for i, h in enumerate(headers)]
    lines = ['  '.join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), '  '.join('-' * w for w in widths)]
    lines += ['  '.join(t.ljust(w) for t, w in zip(row, widths)).rstrip() for row in texts]
    return '\n'.join(lines)


def parse_value(text: str) -> Any:
    """A filter value: JSON if it parses (``3``, ``true``, ``"x"``, ``[1, 2]``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_filter(text: str) -> tuple[str, dict[str, Any]]:
    """``'attributes.value>=2'`` -> ``('attributes.value', {'>=': 2})``."""
    match = FILTER_PATTERN.match(text.strip())
    if match is None:
        symbols = ', '.join(symbol for symbol, _ in FILTER_OPERATORS)
        raise click.BadParameter(f'{text!r} is not FIELD<op>VALUE with <op> one of {symbols}', param_hint='--filter')
    operator = dict(FILTER_OPERATORS)[match['op']]
    value = match['value'] if operator == 'like' else parse_value(match['value'])
    return match['field'], {operator: value}


def resolve_node_pk(storage: SqliteDosStorage, identifier: str) -> int:
    """A node pk from a pk or a uuid (or an unambiguous uuid prefix)."""
    if identifier.isdigit():
        row = storage.get_session().execute('SELECT id FROM db_dbnode WHERE id = ?', (int(identifier),)).fetchone()
        if row is None:
            raise NotExistent(f'no node with pk {identifier} in {storage.filepath_root}')
        return row[0]
    prefix = identifier.lower().replace('\\', '').replace('%', '').replace('_', '')
    rows = (
        storage.get_session().execute('SELECT id FROM db_dbnode WHERE uuid LIKE ? LIMIT 2', (prefix + '%',)).fetchall()
    )
    if not rows or not prefix:
        raise NotExistent(f'no node with uuid {identifier!r} in {storage.filepath_root}')
    if len(rows) > 1:
        raise MultipleObjectsError(f'more than one node has a uuid starting with {identifier!r}: give more characters')
    return rows[0][0]


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


# --- the commands -------------------------------------------------------------------------------------------------

PATH_ARG = click.argument('path', type=click.Path(file_okay=False, path_type=Path))
JSON_OPTION = click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of text.')


@click.group(cls=SqlitedosGroup, context_settings={'help_option_names': ['-h', '--help']})
@click.version_option(__version__, prog_name='sqlitedos')
@click.option(
    '--progress',
    type=click.Choice(['auto', 'always', 'never']),
    default='auto',
    show_default=True,
    help='Progress bars on stderr: only on a terminal (auto), always, or never.',
)
@click.pass_context
def cli(ctx: click.Context, progress: str) -> None:
    """Work with sqlitedos / aiida-core storage folders (database.sqlite + container/) and .aiida archives."""
    ctx.obj = {'progress': progress}


@cli.command()
@PATH_ARG
@click.option('--email', default=DEFAULT_EMAIL, show_default=True, help='Email of the default user to create.')
def init(path: Path, email: str) -> None:
    """Create a new storage folder at PATH (an existing storage is migrated to the current schema)."""
    profile = SqliteDosStorage.create_profile('cli', filepath=path, default_user_email=email)
    created = SqliteDosStorage.initialise(profile)
    verb = 'Created' if created else 'Already a storage (now at the current schema):'
    click.echo(f'{verb} {profile.storage_config["filepath"]} (schema {SqliteDosStorage.version_head()})')


@cli.command()
@PATH_ARG
@click.option('--detailed', is_flag=True, help='Add per-type counts and repository sizes.')
@JSON_OPTION
def info(path: Path, detailed: bool, as_json: bool) -> None:
    """Summarise the storage at PATH: entity counts and repository."""
    with open_storage(path) as storage:
        data = {'path': str(storage.filepath_root), 'schema version': storage.version(), **storage.get_info(detailed)}
    echo_data(data, as_json)


@cli.command()
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
    query_file: Any,
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

    with open_storage(path) as storage:
        if query_file is not None:
            builder = QueryBuilder.from_dict(storage, read_query_dict(query_file))
            if limit is not None:
                builder.limit(limit)
        else:
            conditions = dict(parse_filter(text) for text in filters)
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


def read_query_dict(handle: Any) -> dict[str, Any]:
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


@cli.group()
def node() -> None:
    """Look at one node."""


def node_summary(storage: SqliteDosStorage, pk: int) -> dict[str, Any]:
    """Everything ``node show`` prints about one node."""
    from sqlitedos.repository.tree import flatten

    connection = storage.get_session()
    row = connection.execute(SELECT_NODE, (pk,)).fetchone()
    columns = dict(zip(NODE_COLUMNS, row[: len(NODE_COLUMNS)]))
    attributes, extras, tree = (json.loads(cell_text) if cell_text else {} for cell_text in row[len(NODE_COLUMNS) :])
    links = {
        direction: [
            dict(zip(('pk', 'node_type', 'link_type', 'link_label'), link)) for link in connection.execute(sql, (pk,))
        ]
        for direction, sql in (('incoming', SELECT_INCOMING_LINKS), ('outgoing', SELECT_OUTGOING_LINKS))
    }
    files = {name: key for name, key in flatten(tree).items() if key is not None}
    return {**columns, 'attributes': attributes, 'extras': extras, **links, 'files': files}


NODE_COLUMNS = ('pk', 'uuid', 'node_type', 'process_type', 'label', 'description', 'ctime', 'mtime', 'user', 'computer')
SELECT_NODE = """
    SELECT n.id, n.uuid, n.node_type, n.process_type, n.label, n.description, n.ctime, n.mtime, u.email, c.label,
           n.attributes, n.extras, n.repository_metadata
    FROM db_dbnode AS n
    JOIN db_dbuser AS u ON u.id = n.user_id
    LEFT JOIN db_dbcomputer AS c ON c.id = n.dbcomputer_id
    WHERE n.id = ?
"""
SELECT_INCOMING_LINKS = """
    SELECT n.id, n.node_type, l.type, l.label FROM db_dblink AS l JOIN db_dbnode AS n ON n.id = l.input_id
    WHERE l.output_id = ? ORDER BY l.id
"""
SELECT_OUTGOING_LINKS = """
    SELECT n.id, n.node_type, l.type, l.label FROM db_dblink AS l JOIN db_dbnode AS n ON n.id = l.output_id
    WHERE l.input_id = ? ORDER BY l.id
"""


@node.command('show')
@PATH_ARG
@click.argument('identifier', metavar='PK|UUID')
@JSON_OPTION
def node_show(path: Path, identifier: str, as_json: bool) -> None:
    """Show a node of the storage at PATH: columns, attributes, extras, links and files."""
    with open_storage(path) as storage:
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
@PATH_ARG
@click.argument('identifier', metavar='PK|UUID')
@click.argument('filename', metavar='FILE')
def node_cat(path: Path, identifier: str, filename: str) -> None:
    """Write the content of FILE of a node of the storage at PATH to stdout."""
    with open_storage(path) as storage:
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
    with open_storage(path) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        entities = None
        if not everything:
            entities = [('node', resolve_node_pk(storage, item)) for item in node_ids]
            entities += [('group', int(item)) for item in group_ids]
        target = module.create_archive(storage, output, entities, overwrite=overwrite, progress=bars)
    click.echo(f'Wrote {target} ({target.stat().st_size} bytes) in {elapsed():.2f} s')


@archive.command('import')
@PATH_ARG
@click.argument('archive_path', metavar='ARCHIVE', type=click.Path(exists=True, path_type=Path))
@click.pass_context
def archive_import(ctx: click.Context, path: Path, archive_path: Path) -> None:
    """Import ARCHIVE (an .aiida file) into the storage at PATH."""
    module = _archive_module()
    with open_storage(path) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        before = storage.get_session().execute('SELECT COUNT(*) FROM db_dbnode').fetchone()[0]
        group = module.import_archive(storage, archive_path, progress=bars)
        after = storage.get_session().execute('SELECT COUNT(*) FROM db_dbnode').fetchone()[0]
    where = f' (import group pk {group})' if group is not None else ''
    click.echo(f'Imported {archive_path}: {after - before} new node(s){where} in {elapsed():.2f} s')


@archive.command('inspect')
@click.argument('archive_path', metavar='ARCHIVE', type=click.Path(exists=True, path_type=Path))
@JSON_OPTION
def archive_inspect(archive_path: Path, as_json: bool) -> None:
    """Show the metadata and content counts of ARCHIVE."""
    from sqlitedos.storage.sqlite_zip import SqliteZipBackend

    with SqliteZipBackend(SqliteZipBackend.create_profile(archive_path)) as storage:
        data = {'path': str(archive_path.absolute()), 'metadata': storage.metadata, **storage.get_info(detailed=False)}
    echo_data(data, as_json)


@cli.command()
@PATH_ARG
@click.option('--full', is_flag=True, help='Also delete unreferenced objects, repack and vacuum (needs exclusive use).')
@click.option('--dry-run', is_flag=True, help='Report what would be done, change nothing.')
@click.option('--compress', is_flag=True, help='Compress objects while packing them.')
@click.pass_context
def maintain(ctx: click.Context, path: Path, full: bool, dry_run: bool, compress: bool) -> None:
    """Pack the repository of the storage at PATH (and with --full reclaim space)."""
    stage = 'Full maintenance' if full else 'Packing objects'
    with open_storage(path) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        bars(stage, 0, 1)  # the repository reports no steps: one bar for the whole run
        report = storage.maintain(full=full, dry_run=dry_run, compress=compress)
        bars(stage, 1, 1)
    click.echo('\n'.join(render_tree(report or {})))
    click.echo(f'{"Dry run" if dry_run else "Maintenance"} done in {elapsed():.2f} s')


@cli.command('backup')
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

    with open_storage(path) as storage, progress_bars(ctx) as bars, timed() as elapsed:
        folder = backup(storage, dest, keep=keep, progress=bars)
    click.echo(f'Backed up {path} to {folder} in {elapsed():.2f} s')


@cli.command('verify')
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


# --- demo ---------------------------------------------------------------------------------------------------------

DEMO_EMAIL = 'demo@sqlitedos.org'


def build_demo_graph(storage: SqliteDosStorage) -> dict[str, Any]:
    """x + y -> add (a calculation, run by a workflow) -> sum, with files on the nodes, in a group."""
    from sqlitedos.links import LinkType

    user = storage.default_user

    def make(node_type: str, label: str, **attributes: Any) -> Any:
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


def demo_queries(storage: Any) -> list[tuple[str, list[str], list[list[Any]]]]:
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


def run_demo(path: Path, echo: Callable[[str], None], progress: Any) -> None:
    """The demo: a storage folder with a small graph, info, queries, an archive round trip, a verify."""
    from sqlitedos.verify import verify

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f'{str(path)!r} already exists: the demo builds its storage in a new or empty folder')
    with timed() as elapsed:
        profile = SqliteDosStorage.create_profile('demo', filepath=path, default_user_email=DEMO_EMAIL)
        SqliteDosStorage.initialise(profile)
        echo(f'== Created storage folder {profile.storage_config["filepath"]}')
        with SqliteDosStorage(profile) as storage:
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


def demo_archive(storage: SqliteDosStorage, target: Path, echo: Callable[[str], None], progress: Any) -> None:
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
@click.argument('path', required=False, type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def demo(ctx: click.Context, path: Path | None) -> None:
    """Build a small provenance graph in a new storage folder at PATH and show what sqlitedos does with it."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix='sqlitedos-demo-')) / 'storage'
    with progress_bars(ctx) as bars:
        run_demo(path, click.echo, bars)


@cli.command('vendor')
@click.argument('dest', metavar='DIR', type=click.Path(file_okay=False, path_type=Path))
@click.option('--replace', is_flag=True, help='Replace DIR/sqlitedos if it is a previous vendored copy.')
def vendor_command(dest: Path, replace: bool) -> None:
    """Copy the package, schema inside, to DIR/sqlitedos/: put DIR (or a zip of it) on sys.path to use it unpip'd."""
    from sqlitedos.vendor import vendor

    click.echo(f'Wrote {vendor(dest, replace=replace)}')


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sqlitedos`` command and ``python -m sqlitedos``."""
    cli.main(args=argv, prog_name='sqlitedos')
