"""What every command shares: the ``cli`` group and its one-line errors, progress bars, opening a storage, output."""

from __future__ import annotations

import datetime as dt
import errno
import json
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from sqlitedos import __version__
from sqlitedos.db import storage_error
from sqlitedos.exceptions import AiidaException, MultipleObjectsError, NotExistent, StorageIOError
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
#: The shortest time between two redraws of a progress bar (seconds).
REDRAW_INTERVAL = 0.1
HANDLED_ERRORS = (AiidaException, OSError, ValueError, NotImplementedError, sqlite3.Error)


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line, ``Error: ... (see 'sqlitedos CMD --help')``, with click's exit status 2."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ''
        click.echo(f'Error: {self.format_message()}{hint}', file=file or sys.stderr)


def one_line(exc: click.UsageError) -> click.UsageError:
    """``exc`` as a one-line usage error (click's own shows usage, a hint, a blank line and the error)."""
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return OneLineUsageError(exc.format_message(), exc.ctx)


#: What an ``OSError`` means to the user, by errno.
OS_ERROR_HINTS = {
    errno.EPERM: 'the file or folder is immutable (chattr +i) or the operation is not permitted on it',
    errno.EACCES: 'permission denied: check the owner and mode of the file or folder',
    errno.EROFS: 'the file system is mounted read-only',
    errno.ENOSPC: 'the disk is full',
}


def describe_os_error(exc: OSError, command: str) -> str:
    """``[Errno 1] Operation not permitted: 'x'`` as ``sqlitedos CMD: cannot use 'x': <what it means>``."""
    hint = OS_ERROR_HINTS.get(exc.errno or 0)
    if hint is None or exc.filename is None:
        return str(exc) or type(exc).__name__
    return f'{command}: cannot use {str(exc.filename)!r}: {hint} ({exc.strerror})'


class SqlitedosGroup(click.Group):
    """A command group that turns the storage's errors into one ``Error: ...`` line and exit status 1, and usage
    errors into one line and exit status 2."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise one_line(exc) from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # the reader went away (`sqlitedos ... | head`): click's main exits quietly
        except click.UsageError as exc:
            raise one_line(exc) from exc
        except HANDLED_ERRORS as exc:
            message = str(exc) or type(exc).__name__
            if isinstance(exc, KeyError) and exc.args:  # KeyError's str() adds quotes
                message = str(exc.args[0])
            if isinstance(exc, OSError):
                message = describe_os_error(exc, f'sqlitedos {ctx.invoked_subcommand or ""}'.rstrip())
            raise click.ClickException(message) from exc
        except Exception as exc:
            # disk-objectstore reports a damaged container through SQLAlchemy's errors: still one line, no traceback
            if type(exc).__module__.split('.')[0] not in ('sqlalchemy', 'disk_objectstore'):
                raise
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if 'readonly' in first_line or 'read-only' in first_line:  # not damage: nothing to restore
                raise click.ClickException(
                    f'the repository container is read-only ({first_line}): this command needs to write to it'
                ) from exc
            original = getattr(exc, 'orig', None)
            if isinstance(original, sqlite3.Error):
                translated = storage_error(original)
                if isinstance(translated, StorageIOError):  # a full disk or an I/O error of the pack index
                    raise click.ClickException(f'the repository container: {translated}') from exc
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
        self._drawn = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if stage != self._stage:
            self.close()
            self._bar = click.progressbar(length=max(total, 1), label=stage.ljust(20), file=sys.stderr, show_pos=True)
            self._bar.__enter__()
            self._stage, self._done, self._drawn = stage, 0, now
        elif done < total and now - self._drawn < REDRAW_INTERVAL:
            return  # redraw at most every REDRAW_INTERVAL seconds, and at the end of a stage
        self._bar.length = max(total, 1)
        self._bar.update(max(0, done - self._done))
        self._done, self._drawn = done, now

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
    try:
        profile = SqliteDosStorage.create_profile('cli', filepath=Path(path))
        with SqliteDosStorage(profile, read_only=True) as storage:
            users = storage.users.all()
    except (AiidaException, OSError, sqlite3.Error):
        return None  # opening it for real reports the problem
    return users[0].email if users else None  # all() is in id order


@contextmanager
def open_storage(path: str | Path, read_only: bool = False, default_user: bool = True) -> Iterator[SqliteDosStorage]:
    """The storage folder at ``path``, opened for a ``with`` block (closed when it ends), with its first user as the
    default user (as ``verdi`` profiles do).

    Commands that only read open it ``read_only``: they work on read-only media and leave the folder as it was.
    Those that need no default user (nothing they write or report names it) skip looking it up.
    """
    email = first_user_email(Path(path)) if default_user else None
    profile = SqliteDosStorage.create_profile('cli', filepath=Path(path), default_user_email=email)
    storage = SqliteDosStorage(profile, read_only=read_only)
    with storage:  # entered here, not with `as`: StorageBackend.__enter__ is typed as returning the base class
        yield storage


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
    from sqlitedos.query.builder import QueryBuilder

    if identifier.isdigit():
        if not storage.nodes.find(id=int(identifier)):
            raise NotExistent(f'no node with pk {identifier} in {storage.filepath_root}')
        return int(identifier)
    prefix = identifier.lower().replace('\\', '').replace('%', '').replace('_', '')
    builder = QueryBuilder(backend=storage).append(
        orm_base='node', entity_type='', filters={'uuid': {'like': prefix + '%'}}, project=['id']
    )
    pks = builder.limit(2).all(flat=True) if prefix else []
    if not pks:
        raise NotExistent(f'no node with uuid {identifier!r} in {storage.filepath_root}')
    if len(pks) > 1:
        raise MultipleObjectsError(f'more than one node has a uuid starting with {identifier!r}: give more characters')
    return pks[0]


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    start = time.perf_counter()
    yield lambda: time.perf_counter() - start


# --- the commands -------------------------------------------------------------------------------------------------

PATH_ARG = click.argument('path', type=click.Path(file_okay=False, path_type=Path))
PROGRESS_CHOICE = click.Choice(['auto', 'always', 'never'])
PROGRESS_HELP = 'Progress bars on stderr: only on a terminal (auto), always, or never.'


def set_progress(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """``--progress`` given after the sub-command: it overrides the one before it."""
    if value is not None:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), 'progress': value}


PROGRESS_OPTION = click.option(
    '--progress', type=PROGRESS_CHOICE, default=None, expose_value=False, callback=set_progress, help=PROGRESS_HELP
)
JSON_OPTION = click.option('--json', 'as_json', is_flag=True, help='Print JSON instead of text.')


@click.group(cls=SqlitedosGroup, context_settings={'help_option_names': ['-h', '--help']})
@click.version_option(__version__, prog_name='sqlitedos')
@click.option('--progress', type=PROGRESS_CHOICE, default='auto', show_default=True, help=PROGRESS_HELP)
@click.pass_context
def cli(ctx: click.Context, progress: str) -> None:
    """Work with sqlitedos / aiida-core storage folders (database.sqlite + container/) and .aiida archives."""
    ctx.obj = {'progress': progress}
