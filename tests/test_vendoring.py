"""A vendored copy (``sqlitedos.vendor``) runs from a folder and from a zip with nothing else importable.

Each scenario runs in a child ``python -I -S`` whose ``sys.path`` is the stdlib plus exactly what the test puts on
it, and reports every top-level module it imported: the temp backend, queries and archives need the stdlib only, a
folder storage disk-objectstore (and what disk-objectstore itself needs), the command line click.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sqlitedos.exceptions import InvalidOperation
from sqlitedos.vendor import vendor

ROOT = Path(__file__).resolve().parent.parent

#: Run first in every child: the given folders/zips go first on sys.path; at exit, the modules it imported.
PRELUDE = """
import atexit, json, sys
sys.path[:0] = json.loads(sys.argv[1])
del sys.argv[1]
def _report():
    import sys
    def outside_the_stdlib(name):  # a module from one of the paths the test gave (builtins and runtimes have no file)
        path = getattr(sys.modules.get(name), '__file__', None)
        return path is not None and not path.startswith((sys.base_prefix, sys.prefix))
    names = sorted({name.split('.')[0] for name in sys.modules} - set(sys.stdlib_module_names) - {'__main__'})
    names = [name for name in names if outside_the_stdlib(name)]
    sys.stderr.write('\\nMODULES ' + json.dumps(names) + '\\n')
atexit.register(_report)
"""

#: The stdlib-only part of the public API: temp backend, nodes with files, links, queries, archive round trip.
STDLIB_SCRIPT = """
import io, sys
import sqlitedos
from sqlitedos import LinkType, QueryBuilder, SqliteTempBackend
from sqlitedos.archive import create_archive, import_archive

work = sys.argv[1]
temp = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=work + '/sandbox'))
x = temp.nodes.create(node_type='data.core.int.Int.', user=temp.default_user, label='x')
x.set_attribute('value', 3)
x.repository.put_object_from_filelike(io.BytesIO(b'three'), 'value.txt')
x.store()
calc = temp.nodes.create(node_type='process.calculation.calcjob.CalcJobNode.', user=temp.default_user)
calc.set_attribute('sealed', True)
calc.store(links=[(x, LinkType.INPUT_CALC, 'x')])
qb = QueryBuilder(backend=temp).append(entity_type='data.core.int.Int.', orm_base='node', tag='x',
                                       filters={'attributes.value': {'>': 2}}, project=['label', 'attributes.value'])
qb.append(entity_type='process.calculation.calcjob.CalcJobNode.', orm_base='node', with_incoming='x', project=['id'])
rows = qb.all()
create_archive(temp, work + '/out.aiida')
other = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=work + '/sandbox2'))
import_archive(other, work + '/out.aiida')
(imported,) = QueryBuilder(backend=other).append(entity_type='data.core.int.Int.', orm_base='node').all(flat=True)
content = imported.repository.get_object_content('value.txt')
print(json.dumps({'file': sqlitedos.__file__, 'rows': rows, 'calc': calc.pk, 'nodes': other.nodes.count(),
                  'content': content}))
temp.close(); other.close()
"""

#: A folder storage: initialise, store a node with a file, close, reopen, read it back and query it.
FOLDER_SCRIPT = """
import io, sys
import sqlitedos
from sqlitedos import QueryBuilder, SqliteDosStorage

profile = SqliteDosStorage.create_profile('v', filepath=sys.argv[1], default_user_email='me@lab.org')
assert SqliteDosStorage.initialise(profile)
with SqliteDosStorage(profile) as storage:
    node = storage.nodes.create(node_type='data.core.int.Int.', user=storage.default_user, label='n')
    node.repository.put_object_from_filelike(io.BytesIO(b'folder'), 'a.txt')
    node.store()
with SqliteDosStorage(profile) as storage:
    (node,) = QueryBuilder(backend=storage).append(entity_type='data.core.int.Int.', orm_base='node').all(flat=True)
    print(json.dumps({'file': sqlitedos.__file__, 'label': node.label,
                      'content': node.repository.get_object_content('a.txt')}))
"""

CLI_SCRIPT = """
import sys
from sqlitedos.cli import main
main(sys.argv[1:])
"""


def run_child(paths: list[Path], script: str, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``script`` in ``python -I -S`` with ``paths`` first on sys.path; the process and the modules it imported."""
    argv = [sys.executable, '-I', '-S', '-c', PRELUDE + 'import json\n' + script, json.dumps([str(p) for p in paths])]
    result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120, cwd=paths[0].parent)
    lines = [line for line in result.stderr.splitlines() if line.startswith('MODULES ')]
    assert lines, result.stderr
    return result, json.loads(lines[-1][len('MODULES ') :])


def link_distribution(module: str, into: Path) -> None:
    """Make ``module`` (a package or a single file, from this interpreter's site-packages) importable from ``into``."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    source = Path(spec.origin)
    source = source.parent if source.name == '__init__.py' else source
    into.mkdir(exist_ok=True)
    (into / source.name).symlink_to(source)


@pytest.fixture(scope='module')
def vendored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``DIR`` with ``DIR/sqlitedos/`` written by ``vendor``."""
    dest = tmp_path_factory.mktemp('vendor')
    target = vendor(dest)
    assert target == dest / 'sqlitedos'
    return dest


@pytest.fixture(scope='module')
def vendored_zip(vendored: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vendored copy as a zip with ``sqlitedos/`` at its root, as ``zipimport`` takes it."""
    archive = tmp_path_factory.mktemp('zipped') / 'sqlitedos-vendored.zip'
    with zipfile.ZipFile(archive, 'w') as handle:
        for path in sorted((vendored / 'sqlitedos').rglob('*')):
            if path.is_file() and '__pycache__' not in path.parts:
                handle.write(path, path.relative_to(vendored).as_posix())
    return archive


def test_vendored_copy_has_the_schema_inside(vendored: Path) -> None:
    schema = sorted(path.name for path in (ROOT / 'schema').glob('*.sql'))
    assert schema and sorted(path.name for path in (vendored / 'sqlitedos' / 'schema').glob('*.sql')) == schema
    assert (vendored / 'sqlitedos' / 'py.typed').is_file()
    assert (vendored / 'sqlitedos' / 'LICENSE').read_text('utf-8') == (ROOT / 'LICENSE').read_text('utf-8')


@pytest.mark.parametrize('form', ['folder', 'zip'])
def test_temp_backend_queries_archives_need_only_the_stdlib(
    form: str, vendored: Path, vendored_zip: Path, tmp_path: Path
) -> None:
    location = vendored if form == 'folder' else vendored_zip
    work = tmp_path / 'work'
    work.mkdir()
    result, modules = run_child([location], STDLIB_SCRIPT, str(work))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report['file'].startswith(str(location)), 'the vendored copy ran, not the checkout'
    assert report['rows'] == [['x', 3, report['calc']]]
    assert report['nodes'] == 2
    assert report['content'] == 'three'
    assert modules == ['sqlitedos']


@pytest.mark.parametrize('form', ['folder', 'zip'])
def test_folder_storage_needs_only_disk_objectstore(
    form: str, vendored: Path, vendored_zip: Path, tmp_path: Path
) -> None:
    deps = tmp_path / 'deps'
    for module in ('disk_objectstore', 'sqlalchemy', 'typing_extensions'):  # disk-objectstore and what it requires
        link_distribution(module, deps)
    location = vendored if form == 'folder' else vendored_zip
    result, modules = run_child([location, deps], FOLDER_SCRIPT, str(tmp_path / 'storage'))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report['file'].startswith(str(location))
    assert (report['label'], report['content']) == ('n', 'folder')
    assert 'click' not in modules
    assert set(modules) <= {'sqlitedos', 'disk_objectstore', 'sqlalchemy', 'typing_extensions'}
    assert {'sqlitedos', 'disk_objectstore'} <= set(modules)


def test_folder_storage_without_disk_objectstore_says_what_is_missing(vendored: Path, tmp_path: Path) -> None:
    result, _ = run_child([vendored], FOLDER_SCRIPT, str(tmp_path / 'storage'))
    assert result.returncode != 0
    assert 'disk_objectstore' in result.stderr or 'disk-objectstore' in result.stderr


def test_command_line_needs_click(vendored: Path, tmp_path: Path) -> None:
    deps = tmp_path / 'deps'
    for module in ('disk_objectstore', 'sqlalchemy', 'typing_extensions', 'click'):
        link_distribution(module, deps)
    storage = tmp_path / 'storage'
    result, modules = run_child([vendored, deps], CLI_SCRIPT, 'init', str(storage))
    assert result.returncode == 0, result.stderr
    assert (storage / 'database.sqlite').is_file()
    result, modules = run_child([vendored, deps], CLI_SCRIPT, 'info', str(storage), '--json')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)['entities']['Users']['count'] == 1
    assert 'click' in modules
    (deps / 'click').unlink()
    result, _ = run_child([vendored, deps], CLI_SCRIPT, 'info', str(storage))
    assert result.returncode != 0 and "No module named 'click'" in result.stderr


def test_vendor_refuses_to_overwrite_unless_asked(vendored: Path, tmp_path: Path) -> None:
    dest = tmp_path / 'dest'
    target = vendor(dest)
    assert list((ROOT / 'sqlitedos').rglob('*.pyc')), 'the checkout has compiled files (this test imported it)'
    assert not list(target.rglob('*.pyc')), 'compiled files are left out of the copy'
    (target / 'stale.py').write_text('')
    with pytest.raises(InvalidOperation, match='exists'):
        vendor(dest)
    assert vendor(dest, replace=True) == target
    assert not (target / 'stale.py').exists()
    (tmp_path / 'other' / 'sqlitedos').mkdir(parents=True)
    (tmp_path / 'other' / 'sqlitedos' / 'mine.txt').write_text('keep')
    with pytest.raises(InvalidOperation, match='not a vendored copy'):
        vendor(tmp_path / 'other', replace=True)
    assert (tmp_path / 'other' / 'sqlitedos' / 'mine.txt').read_text() == 'keep'


def test_vendor_command_line(tmp_path: Path) -> None:
    """``python -m sqlitedos.vendor DIR`` works from a checkout with the stdlib only (what ``make vendor`` runs)."""
    result = subprocess.run(
        [
            sys.executable,
            '-I',
            '-S',
            '-c',
            'import sys; sys.path[:0] = [sys.argv.pop(1)]; from sqlitedos.vendor import main; sys.exit(main())',
            str(ROOT),
            str(tmp_path / 'v'),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'v' / 'sqlitedos' / 'schema' / 'main_0001_initial.sql').is_file()


def test_a_copy_without_the_schema_names_the_remedy(tmp_path: Path) -> None:
    """``cp -r sqlitedos/`` from a checkout (schema left behind): a clear error, not ``FileNotFoundError``."""
    shutil.copytree(
        ROOT / 'sqlitedos', tmp_path / 'by-hand' / 'sqlitedos', ignore=shutil.ignore_patterns('__pycache__')
    )
    result, _ = run_child([tmp_path / 'by-hand'], STDLIB_SCRIPT, str(tmp_path))
    assert result.returncode == 1
    assert 'StorageMigrationError: the schema files are missing' in result.stderr
    assert 'python -m sqlitedos vendor DIR' in result.stderr


def test_a_vendored_zip_vendors_itself_again(vendored_zip: Path, tmp_path: Path) -> None:
    """``vendor`` reads the package through importlib.resources, so it copies from a zip as from a folder."""
    result, _ = run_child(
        [vendored_zip], 'from sqlitedos.vendor import vendor\nprint(vendor(sys.argv[1]))', str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / 'sqlitedos'
    assert (tmp_path / 'sqlitedos' / 'schema' / 'main_0001_initial.sql').is_file()
    assert (tmp_path / 'sqlitedos' / 'LICENSE').is_file()
    work = tmp_path / 'work'
    work.mkdir()
    result, modules = run_child([tmp_path], STDLIB_SCRIPT, str(work))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)['nodes'] == 2
