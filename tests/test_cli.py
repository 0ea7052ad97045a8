"""The ``sqlitedos`` command: every sub-command through click's ``CliRunner``, and once end to end in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sqlitedos.cli import cli, parse_filter, render_table

EMAIL = 'demo@sqlitedos.org'


def run(*args: Any, input: str | None = None, exit_code: int = 0) -> Result:
    result = CliRunner().invoke(cli, [str(arg) for arg in args], input=input)
    assert result.exit_code == exit_code, (result.output, result.stderr, result.exception)
    if exit_code in (1, 2):  # 1: the command failed; 2: it was called wrongly (with a pointer to --help)
        assert result.stderr.startswith('Error: ') and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert 'Traceback' not in result.output + result.stderr
        assert (exit_code == 2) == result.stderr.rstrip().endswith(" --help')"), result.stderr
    return result


@pytest.fixture(scope='module')
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage folder holding the demo graph (made by ``sqlitedos demo``); tests copy it before changing it."""
    path = tmp_path_factory.mktemp('demo') / 'storage'
    run('demo', path)
    return path


@pytest.fixture
def storage_path(demo_folder: Path, tmp_path: Path) -> Path:
    """A private copy of the demo storage folder."""
    return Path(shutil.copytree(demo_folder, tmp_path / 'storage'))


def node_pk(path: Path, label: str) -> int:
    rows = json.loads(run('query', path, '--filter', f'label={label}', '--project', 'id', '--json').output)
    (row,) = rows
    return row['id']


def test_help_lists_every_command() -> None:
    output = run('--help').output
    for name in ('init', 'info', 'query', 'node', 'archive', 'maintain', 'backup', 'verify', 'migrate', 'demo'):
        assert f'  {name} ' in output
    assert 'show' in run('node', '--help').output
    assert {'create', 'import', 'inspect'} <= set(run('archive', '--help').output.split())
    assert '0.1.0' in run('--version').output


def test_init(tmp_path: Path) -> None:
    path = tmp_path / 'new'
    assert run('init', path, '--email', 'me@lab.org').output.startswith(f'Created {path}')
    assert 'Already a storage' in run('init', path).output
    users = json.loads(run('query', path, '--entity', 'user', '--json').output)
    assert [user['email'] for user in users] == ['me@lab.org']
    (tmp_path / 'busy').mkdir()
    (tmp_path / 'busy' / 'file').write_text('x')
    assert 'not empty' in run('init', tmp_path / 'busy', exit_code=1).stderr


def test_info(demo_folder: Path) -> None:
    output = run('info', demo_folder).output
    assert 'Nodes: 6' in output and 'Links: 8' in output and 'SHA-hash algorithm: sha256' in output
    data = json.loads(run('info', demo_folder, '--detailed', '--json').output)
    assert data['entities']['Nodes']['count'] == 6
    assert data['schema version'] == 'main_0002'
    assert 'data.core.int.Int.' in data['entities']['Nodes']['node_types']


def test_query_options(demo_folder: Path) -> None:
    output = run(
        'query',
        demo_folder,
        '--type',
        'data.core.int.Int.',
        '--filter',
        'attributes.value>=4',
        '--project',
        'label',
        '--project',
        'attributes.value',
    ).output
    lines = output.splitlines()
    assert lines[0].split() == ['label', 'attributes.value']
    assert [line.split() for line in lines[2:4]] == [['y', '4'], ['sum', '7']]
    assert lines[-1] == '(2 rows)'
    rows = json.loads(
        run(
            'query',
            demo_folder,
            '--type',
            'data.core.int.Int.',
            '--project',
            'label',
            '--order-by',
            '-id',
            '--limit',
            '2',
            '--json',
        ).output
    )
    assert rows == [{'label': 'sum'}, {'label': 'y'}]
    rows = json.loads(run('query', demo_folder, '--filter', 'label~a%', '--filter', 'label!=add', '--json').output)
    assert [row['label'] for row in rows] == ['add_and_report']
    rows = json.loads(
        run(
            'query',
            demo_folder,
            '--filter',
            'attributes.value>3',
            '--filter',
            'attributes.value<7',
            '--project',
            'label',
            '--json',
        ).output
    )
    assert rows == [{'label': 'y'}]
    assert run('query', demo_folder, '--filter', 'label=nothing').output.strip() == '(no rows)'
    groups = json.loads(run('query', demo_folder, '--entity', 'group', '--json').output)
    assert [group['label'] for group in groups] == ['demo']


def test_query_dict_from_file_and_stdin(demo_folder: Path, tmp_path: Path) -> None:
    query_dict = {
        'path': [
            {'entity_type': 'process.calculation.calcjob.CalcJobNode.', 'orm_base': 'node', 'tag': 'calc'},
            {
                'entity_type': 'data.core.int.Int.',
                'orm_base': 'node',
                'tag': 'out',
                'joining_keyword': 'with_incoming',
                'joining_value': 'calc',
            },
        ],
        'project': {'calc': ['label'], 'out': ['label', 'attributes.value']},
    }
    file = tmp_path / 'q.json'
    file.write_text(json.dumps(query_dict))
    rows = json.loads(run('query', demo_folder, file, '--json').output)
    assert rows == [{'calc.label': 'add', 'out.label': 'sum', 'out.attributes.value': 7}]
    output = run('query', demo_folder, '-', input=json.dumps(query_dict)).output
    assert output.splitlines()[0].split() == ['calc.label', 'out.label', 'out.attributes.value']
    assert 'not a JSON query dict' in run('query', demo_folder, '-', input='{nope', exit_code=2).stderr
    assert 'must be an object' in run('query', demo_folder, '-', input='[1]', exit_code=2).stderr


def test_query_errors(demo_folder: Path) -> None:
    assert 'FIELD<op>VALUE' in run('query', demo_folder, '--filter', 'no operator', exit_code=2).stderr
    assert "unknown field 'nosuch'" in run('query', demo_folder, '--filter', 'nosuch=1', exit_code=1).stderr


def test_node_show(demo_folder: Path) -> None:
    pk = node_pk(demo_folder, 'add')
    output = run('node', 'show', demo_folder, pk).output
    assert f'pk:           {pk}' in output
    assert 'process_type: aiida.calculations:core.arithmetic.add' in output
    assert 'exit_status: 0' in output
    assert 'input_calc  x' in output and 'create      sum' in output and 'call_calc   CALL' in output
    assert 'aiida.in' in output and '_aiidasubmit.sh' in output
    data = json.loads(run('node', 'show', demo_folder, pk, '--json').output)
    assert data['label'] == 'add' and data['user'] == EMAIL
    assert sorted(link['link_label'] for link in data['outgoing']) == ['retrieved', 'sum']
    by_uuid = json.loads(run('node', 'show', demo_folder, data['uuid'], '--json').output)
    by_prefix = json.loads(run('node', 'show', demo_folder, data['uuid'][:9], '--json').output)
    assert by_uuid == by_prefix == data
    assert 'no node with pk 999' in run('node', 'show', demo_folder, 999, exit_code=1).stderr
    assert 'no node with uuid' in run('node', 'show', demo_folder, 'zzzz', exit_code=1).stderr


def test_node_cat(demo_folder: Path) -> None:
    retrieved = node_pk(demo_folder, 'retrieved')
    assert run('node', 'cat', demo_folder, retrieved, 'aiida.out').stdout_bytes == b'7\n'
    assert run('node', 'cat', demo_folder, retrieved, 'logs/scheduler.err').stdout_bytes == b''
    error = run('node', 'cat', demo_folder, retrieved, 'missing.txt', exit_code=1).stderr
    assert "no file 'missing.txt'" in error and 'aiida.out' in error


def test_archive_create_inspect_import(demo_folder: Path, tmp_path: Path) -> None:
    everything = tmp_path / 'all.aiida'
    assert 'Wrote' in run('archive', 'create', demo_folder, everything, '--all').output
    assert 'already exists' in run('archive', 'create', demo_folder, everything, '--all', exit_code=1).stderr
    run('archive', 'create', demo_folder, everything, '--all', '--overwrite')
    inspected = json.loads(run('archive', 'inspect', everything, '--json').output)
    assert inspected['metadata']['export_version'] == 'main_0001'
    assert inspected['entities']['Nodes']['count'] == 6
    assert 'export_version: main_0001' in run('archive', 'inspect', everything).output
    x = node_pk(demo_folder, 'x')
    part = tmp_path / 'x.aiida'
    run('archive', 'create', demo_folder, part, '--nodes', x)
    assert json.loads(run('archive', 'inspect', part, '--json').output)['entities']['Nodes']['count'] == 1
    group = json.loads(run('query', demo_folder, '--entity', 'group', '--json').output)[0]['id']
    grouped = tmp_path / 'group.aiida'
    run('archive', 'create', demo_folder, grouped, '--groups', group)
    assert json.loads(run('archive', 'inspect', grouped, '--json').output)['entities']['Groups']['count'] == 1
    assert 'either --all' in run('archive', 'create', demo_folder, tmp_path / 'none.aiida', exit_code=2).stderr
    target = tmp_path / 'target'
    run('init', target)
    assert '6 new node(s)' in run('archive', 'import', target, everything).output
    assert '0 new node(s)' in run('archive', 'import', target, part).output
    assert run('verify', target).output.startswith(f'Storage {target}: OK')


def test_archive_errors(tmp_path: Path) -> None:
    bogus = tmp_path / 'bogus.aiida'
    bogus.write_text('not a zip')
    assert 'not a readable' in run('archive', 'inspect', bogus, exit_code=1).stderr
    run('init', tmp_path / 's')
    assert 'Error' in run('archive', 'import', tmp_path / 's', bogus, exit_code=1).stderr


def test_maintain(storage_path: Path) -> None:
    assert 'Dry run done' in run('maintain', storage_path, '--dry-run').output
    assert 'loose: 4' in run('info', storage_path).output
    assert 'Packing loose objects' in run('maintain', storage_path, '--progress', 'always').stderr
    assert 'packed: 4' in run('info', storage_path).output
    output = run('maintain', storage_path, '--full', '--compress').output
    assert 'do_repack: True' in output and 'Maintenance done' in output
    assert run('verify', storage_path).exit_code == 0


def test_backup(storage_path: Path, tmp_path: Path) -> None:
    dest = tmp_path / 'backups'
    first = run('backup', storage_path, dest).output
    assert first.startswith(f'Backed up {storage_path} to {dest}/backup_')
    run('backup', storage_path, dest, '--keep', '0')
    folders = [p for p in dest.iterdir() if p.name.startswith('backup_')]
    assert len(folders) == 1 and (dest / 'last-backup').resolve() == folders[0].resolve()
    assert 'Nodes: 6' in run('info', folders[0]).output
    assert run('verify', dest / 'last-backup').exit_code == 0
    assert 'Invalid value for' in run('backup', storage_path, dest, '--keep', '-1', exit_code=2).stderr


def test_progress_bars_only_when_asked(storage_path: Path, tmp_path: Path) -> None:
    quiet = run('backup', storage_path, tmp_path / 'quiet')
    assert quiet.stderr == ''  # CliRunner's streams are not terminals: no bars
    shown = run('--progress', 'always', 'backup', storage_path, tmp_path / 'shown')
    assert 'Copying container' in shown.stderr and 'Copying database' in shown.stderr
    assert shown.stdout.startswith('Backed up')
    assert run('--progress', 'never', 'verify', storage_path).stderr == ''


def test_verify(storage_path: Path) -> None:
    assert run('verify', storage_path).output.startswith(f'Storage {storage_path}: OK')
    retrieved = node_pk(storage_path, 'retrieved')
    key = json.loads(run('node', 'show', storage_path, retrieved, '--json').output)['files']['aiida.out']
    (storage_path / 'container' / 'loose' / key[:2] / key[2:]).unlink()
    result = CliRunner().invoke(cli, ['verify', str(storage_path)])
    assert result.exit_code == 1  # the report on stdout, no error line
    assert '[missing_object]' in result.output and key in result.output
    report = json.loads(CliRunner().invoke(cli, ['verify', str(storage_path), '--json']).output)
    assert report['ok'] is False and report['problems'][0]['kind'] == 'missing_object'


def sql_write(path: Path, sql: str) -> None:
    """Change the storage's database behind its back."""
    connection = sqlite3.connect(path / 'database.sqlite')
    try:
        with connection:
            connection.execute(sql)
    finally:
        connection.close()


def test_verify_repair(storage_path: Path) -> None:
    sql_write(storage_path, "UPDATE db_dbnode SET repository_metadata = '{}' WHERE label = 'retrieved'")
    output = run('verify', storage_path).output
    assert '2 unreferenced object(s)' in output  # aiida.out and the empty scheduler.err
    repaired = run('verify', storage_path, '--repair').output
    assert 'repaired: deleted' in repaired
    assert 'unreferenced' not in run('verify', storage_path).output


def test_migrate(storage_path: Path) -> None:
    assert 'already at the current schema version main_0002' in run('migrate', storage_path).output
    sql_write(storage_path, "UPDATE alembic_version SET version_num = 'main_0001'")
    assert 'sqlitedos migrate PATH' in run('info', storage_path, exit_code=1).stderr
    assert f'Migrated {storage_path} from main_0001 to main_0002' in run('migrate', storage_path).output
    assert 'Nodes: 6' in run('info', storage_path).output


def test_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = run('demo', tmp_path / 'demo').output
    for text in (
        'Created storage folder',
        'Nodes: 6',
        'Query: Int nodes with value > 3',
        'exported the storage',
        'imported it into an in-memory SqliteTempBackend',
        'sqlitedos verify: OK',
    ):
        assert text in output
    assert 'already exists' in run('demo', tmp_path / 'demo', exit_code=1).stderr
    assert not list(tmp_path.glob('*.aiida'))  # the demo archive lived in a temporary folder
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()
    assert 'Created storage folder' in run('demo').output
    assert list((tmp_path / 'tmp').glob('sqlitedos-demo-*/storage/database.sqlite'))


def test_errors_are_one_line(tmp_path: Path) -> None:
    assert 'does not exist' in run('info', tmp_path / 'missing', exit_code=1).stderr
    (tmp_path / 'empty').mkdir()
    run('info', tmp_path / 'empty', exit_code=1)
    run('verify', tmp_path / 'empty', exit_code=1)
    run('node', 'show', tmp_path / 'empty', '1', exit_code=1)
    run('migrate', tmp_path / 'empty', exit_code=1)
    (tmp_path / 'file').write_text('x')
    run('init', tmp_path / 'file', exit_code=2)  # click refuses a file where a folder is expected


def test_helpers() -> None:
    assert parse_filter('attributes.value>=2') == ('attributes.value', {'>=': 2})
    assert parse_filter('label=x') == ('label', {'==': 'x'})
    assert parse_filter('label~a%') == ('label', {'like': 'a%'})
    assert parse_filter('label!=x') == ('label', {'!==': 'x'})
    assert parse_filter('extras.k="1"') == ('extras.k', {'==': '1'})
    table = render_table(['a', 'bb'], [[1, None], ['x' * 100, {'k': [1]}]])
    lines = table.splitlines()
    assert lines[0] == 'a' + ' ' * 61 + 'bb' and lines[-1].endswith('{"k": [1]}') and '…' in lines[-1]


def test_import_sqlitedos_does_not_import_click() -> None:
    code = 'import sys, sqlitedos; print("click" in sys.modules)'
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout == 'False\n'


def sqlitedos_command(*args: Any, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'sqlitedos', *map(str, args)],
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, 'PYTHONPATH': str(Path(__file__).parent.parent)},
    )


def test_every_command_end_to_end(tmp_path: Path) -> None:
    """Each sub-command once in a real process on a real folder, output as a person (or a pipe) sees it."""
    path, dest = tmp_path / 'demo', tmp_path / 'backups'
    assert 'sqlitedos verify: OK' in sqlitedos_command('demo', path).stdout
    assert sqlitedos_command('init', tmp_path / 'other').stdout.startswith('Created')
    assert 'Nodes: 6' in sqlitedos_command('info', path).stdout
    rows = json.loads(sqlitedos_command('query', path, '--type', 'data.core.int.Int.', '--json').stdout)
    assert [row['label'] for row in rows] == ['x', 'y', 'sum']
    sum_pk = rows[-1]['id']
    assert 'value: 7' in sqlitedos_command('node', 'show', path, sum_pk).stdout
    retrieved = json.loads(sqlitedos_command('query', path, '--filter', 'label=retrieved', '--json').stdout)[0]['id']
    assert sqlitedos_command('node', 'cat', path, retrieved, 'aiida.out').stdout == '7\n'
    assert 'Wrote' in sqlitedos_command('archive', 'create', path, tmp_path / 'a.aiida', '--all').stdout
    assert 'Nodes: 6' in sqlitedos_command('archive', 'inspect', tmp_path / 'a.aiida').stdout
    assert '6 new node(s)' in sqlitedos_command('archive', 'import', tmp_path / 'other', tmp_path / 'a.aiida').stdout
    assert 'Maintenance done' in sqlitedos_command('maintain', path).stdout
    backed = sqlitedos_command('backup', path, dest, '--keep', '1')
    assert backed.stdout.startswith('Backed up') and backed.stderr == ''  # a pipe: no progress bars
    assert 'OK' in sqlitedos_command('verify', dest / 'last-backup').stdout
    assert 'already at the current schema' in sqlitedos_command('migrate', path).stdout
    failed = sqlitedos_command('info', tmp_path / 'missing', check=False)
    assert failed.returncode == 1 and failed.stderr.startswith('Error: ') and 'Traceback' not in failed.stderr


def test_commands_on_the_aiida_made_fixture(fixture_profile_path: Path, manifest: dict, tmp_path: Path) -> None:
    """info, query, node show/cat, verify and backup on a storage folder written by aiida-core 2.9.4."""
    path = fixture_profile_path
    info = json.loads(run('info', path, '--json').output)
    assert info['entities']['Nodes']['count'] == manifest['counts']['nodes']
    assert info['entities']['Links']['count'] == manifest['counts']['links']
    uuids = {row['uuid'] for row in json.loads(run('query', path, '--json').output)}
    assert uuids == {node['uuid'] for node in manifest['nodes']}
    with_files = [node for node in manifest['nodes'] if node['files_sha256']]
    assert with_files
    for expected in with_files[:3]:
        shown = json.loads(run('node', 'show', path, expected['uuid'], '--json').output)
        assert shown['attributes'] == expected['attributes'] and shown['user'] == expected['user_email']
        assert shown['files'] == expected['files_sha256']  # keys are the sha256 of the content
        name = min(shown['files'])
        content = run('node', 'cat', path, expected['uuid'], name).stdout_bytes
        assert hashlib.sha256(content).hexdigest() == expected['files_sha256'][name]
    assert run('verify', path).output.startswith(f'Storage {path}: OK')
    run('backup', path, tmp_path / 'dest')
    assert run('verify', tmp_path / 'dest' / 'last-backup').exit_code == 0


def test_damaged_container_is_one_error_line(storage_path: Path) -> None:
    run('maintain', storage_path)
    (storage_path / 'container' / 'packs.idx').write_bytes(b'not a database')
    stderr = run('info', storage_path, exit_code=1).stderr
    assert stderr.count('\n') == 1 and 'packs.idx' in stderr and 'is damaged' in stderr
    assert '[container]' in CliRunner().invoke(cli, ['verify', str(storage_path)]).output
