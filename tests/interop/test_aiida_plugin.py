"""aiida-core runs on sqlitedos: the ``sqlitedos.dos`` / ``sqlitedos.temp`` storage plugins under aiida's own ORM,
engine, ``verdi`` and archive tools (the fast subset of ``make aiida-suite``; runs in ``.venv-aiida``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiida import orm
from aiida.common import exceptions
from aiida.common.links import LinkType
from aiida.engine import WorkChain, calcfunction, run, run_get_node
from aiida.manage import get_manager
from aiida.manage.configuration.profile import Profile
from aiida.plugins import StorageFactory

from sqlitedos.aiida import SqliteDosStorage, SqliteTempStorage

VERDI = Path(sys.executable).with_name('verdi')


def plugin_profile(path: Path, name: str = 'plugin', email: str | None = 'plugin@example.org') -> Profile:
    """An aiida profile on the ``sqlitedos.dos`` folder at ``path`` (no broker)."""
    return Profile(
        name,
        {
            'default_user_email': email,
            'storage': {'backend': 'sqlitedos.dos', 'config': {'filepath': str(path)}},
            'process_control': {'backend': None, 'config': {}},
        },
    )


@pytest.fixture
def plugin_loaded(tmp_path: Path) -> Iterator[Any]:
    """A new ``sqlitedos.dos`` folder loaded as aiida's current profile, with its default user; yields the storage."""
    profile = plugin_profile(tmp_path / 'storage')
    assert SqliteDosStorage.initialise(profile) is True
    manager = get_manager()
    manager.load_profile(profile, allow_switch=True)
    try:
        storage = manager.get_profile_storage()
        assert storage.default_user.email == profile.default_user_email  # made by initialise, as an ORM User
        yield storage
    finally:
        manager.unload_profile()


@calcfunction
def add(x: orm.Int, y: orm.Int) -> orm.Int:
    return x + y


@calcfunction
def multiply(x: orm.Int, y: orm.Int) -> orm.Int:
    return x * y


class AddMultiply(WorkChain):
    """(x + y) * z, in two calcfunction steps."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input('x', valid_type=orm.Int)
        spec.input('y', valid_type=orm.Int)
        spec.input('z', valid_type=orm.Int)
        spec.outline(cls.add, cls.multiply)
        spec.output('result', valid_type=orm.Int)

    def add(self) -> None:
        self.ctx.total = add(self.inputs.x, self.inputs.y)

    def multiply(self) -> None:
        self.out('result', multiply(self.ctx.total, self.inputs.z))


def test_entry_points_load_the_plugin_classes() -> None:
    assert StorageFactory('sqlitedos.dos') is SqliteDosStorage
    assert StorageFactory('sqlitedos.temp') is SqliteTempStorage
    assert not SqliteDosStorage.__abstractmethods__
    assert not SqliteTempStorage.__abstractmethods__


def test_engine_runs_calcfunctions_and_a_workchain(plugin_loaded: Any, tmp_path: Path) -> None:
    assert isinstance(plugin_loaded, SqliteDosStorage)
    total = add(orm.Int(2), orm.Int(3))
    assert total.value == 5 and total.is_stored
    assert total.creator.process_label == 'add' and total.creator.is_finished_ok

    result, node = run_get_node(AddMultiply, x=orm.Int(1), y=orm.Int(2), z=orm.Int(4))
    assert result['result'].value == 12
    assert node.is_finished_ok
    called = sorted(child.process_label for child in node.called)
    assert called == ['add', 'multiply']
    # The provenance, through aiida's QueryBuilder (compiled by sqlitedos): the workchain returns the product, which
    # the multiply calcfunction created.
    qb = orm.QueryBuilder()
    qb.append(orm.WorkChainNode, filters={'id': node.pk}, tag='wc')
    qb.append(orm.Int, with_incoming='wc', edge_filters={'type': LinkType.RETURN.value}, project='attributes.value')
    assert qb.all(flat=True) == [12]
    assert run(add, x=orm.Int(10), y=orm.Int(-3)).value == 7

    # aiida's own core.sqlite_dos reads what the plugin wrote, byte-compatible folder.
    from aiida.storage.sqlite_dos.backend import SqliteDosStorage as AiidaSqliteDosStorage

    counts = (orm.QueryBuilder().append(orm.Node).count(), orm.QueryBuilder().append(entity_type='link').count())
    profile = Profile(
        'aiida',
        {
            'storage': {'backend': 'core.sqlite_dos', 'config': {'filepath': str(tmp_path / 'storage')}},
            'process_control': {'backend': None, 'config': {}},
        },
    )
    aiida_storage = AiidaSqliteDosStorage(profile)
    try:
        qb = orm.QueryBuilder(backend=aiida_storage)
        assert (
            qb.append(orm.Node).count(),
            orm.QueryBuilder(backend=aiida_storage).append(entity_type='link').count(),
        ) == counts
    finally:
        aiida_storage.close()


def test_entities_raise_aiida_exceptions_and_share_one_object_per_row(plugin_loaded: Any) -> None:
    orm.Group(label='g').store()
    with pytest.raises(exceptions.IntegrityError):
        orm.Group(label='g').store()
    node = orm.Data().store()
    with pytest.raises(AttributeError):
        node.base.attributes.get('missing')
    comment = node.base.comments.add('original')
    node.base.comments.update(comment.pk, 'new')
    assert comment.content == 'new'
    with pytest.raises(exceptions.NotExistent):
        orm.load_node(node.pk + 1000)


def test_backend_users_create_takes_the_names_as_sqlitedos_does(plugin_loaded: Any) -> None:
    """The plugin's ``users.create`` has the signature of sqlitedos' own: names by position too, None as empty."""
    user = plugin_loaded.users.create('positional@example.org', 'First', None, institution=None).store()
    assert (user.first_name, user.last_name, user.institution) == ('First', '', '')
    assert orm.User.collection.get(email='positional@example.org').first_name == 'First'


def test_iterall_rolls_back_writes_of_an_abandoned_iteration(plugin_loaded: Any) -> None:
    for _ in range(3):
        orm.Data().store()
    with pytest.raises(RuntimeError):
        for _ in orm.QueryBuilder().append(orm.Data).iterall():
            orm.Data().store()
            raise RuntimeError('stop')
    assert orm.QueryBuilder().append(orm.Data).count() == 3


def test_temp_storage_runs_the_orm() -> None:
    profile = SqliteTempStorage.create_profile('temp-plugin', default_user_email='temp@example.org')
    manager = get_manager()
    manager.load_profile(profile, allow_switch=True)
    try:
        storage = manager.get_profile_storage()
        assert isinstance(storage, SqliteTempStorage)
        node = orm.SinglefileData.from_string('in memory').store()
        assert orm.load_node(node.pk).get_content() == 'in memory'
        assert add(orm.Int(1), orm.Int(1)).value == 2
    finally:
        manager.unload_profile()


def verdi(home: Path, *args: str, input: str | None = None) -> str:
    """Run ``verdi`` of ``.venv-aiida`` with its configuration in ``home``; its output (it must succeed)."""
    environment = {**os.environ, 'AIIDA_PATH': str(home)}
    result = subprocess.run(
        [str(VERDI), *args], env=environment, capture_output=True, text=True, input=input, timeout=300
    )
    assert result.returncode == 0, f'verdi {" ".join(args)} failed:\n{result.stdout}\n{result.stderr}'
    return result.stdout


def setup_profile(home: Path, name: str, folder: Path) -> None:
    verdi(
        home,
        'profile',
        'setup',
        'sqlitedos.dos',
        '-n',
        '--profile-name',
        name,
        '--email',
        f'{name}@example.org',
        '--first-name',
        'A',
        '--last-name',
        'B',
        '--institution',
        'C',
        '--broker',
        'none',
        '--filepath',
        str(folder),
    )


@pytest.mark.slow
def test_verdi_storage_commands_and_archive_round_trip(tmp_path: Path) -> None:
    home = tmp_path / 'home'
    setup_profile(home, 'source', tmp_path / 'source')
    script = tmp_path / 'script.py'
    script.write_text(
        'from aiida import orm\n'
        'from aiida.engine import calcfunction\n'
        '@calcfunction\n'
        'def add(x, y):\n'
        '    return x + y\n'
        'add(orm.Int(1), orm.Int(2))\n'
        'orm.SinglefileData.from_string("archived bytes", filename="a.txt").store()\n'
        'orm.Group(label="exported").store().add_nodes([orm.Int(7).store()])\n'
    )
    verdi(home, '-p', 'source', 'run', str(script))
    info = verdi(home, '-p', 'source', 'storage', 'info', '--detailed')
    assert 'count: 6' in info  # 3 Int, the calcfunction, the file, the group's Int
    assert "'main_0002'" in verdi(home, '-p', 'source', 'storage', 'version')
    verdi(home, '-p', 'source', 'storage', 'migrate', '--force')
    verdi(home, '-p', 'source', 'storage', 'maintain', '--full', '--force')
    verdi(home, '-p', 'source', 'storage', 'backup', str(tmp_path / 'backups'))
    (backup,) = [path for path in (tmp_path / 'backups').iterdir() if path.name.startswith('backup_')]
    assert (backup / 'database.sqlite').is_file() and (backup / 'container').is_dir()
    assert (
        json.loads((tmp_path / 'backups' / 'config.json').read_text())['profiles']['source']['storage']['backend']
        == 'sqlitedos.dos'
    )

    archive = tmp_path / 'out.aiida'
    verdi(home, '-p', 'source', 'archive', 'create', '--all', str(archive))
    setup_profile(home, 'target', tmp_path / 'target')
    verdi(home, '-p', 'target', 'archive', 'import', str(archive))
    check = tmp_path / 'check.py'
    check.write_text(
        'from aiida import orm\n'
        'print(orm.QueryBuilder().append(orm.Node).count(), orm.QueryBuilder().append(entity_type="link").count())\n'
        'print(orm.QueryBuilder().append(orm.SinglefileData).one()[0].get_content())\n'
        'print(orm.load_group("exported").count())\n'
    )
    assert verdi(home, '-p', 'target', 'run', str(check)).split('\n')[:3] == ['6 3', 'archived bytes', '1']


@pytest.mark.slow
def test_a_profile_points_at_a_folder_aiida_made(tmp_path: Path) -> None:
    """``sqlitedos.dos`` opens an existing ``core.sqlite_dos`` folder with its data (same configuration keys)."""
    home = tmp_path / 'home'
    verdi(
        home,
        'profile',
        'setup',
        'core.sqlite_dos',
        '-n',
        '--profile-name',
        'made-by-aiida',
        '--email',
        'a@example.org',
        '--first-name',
        'A',
        '--last-name',
        'B',
        '--institution',
        'C',
        '--broker',
        'none',
        '--filepath',
        str(tmp_path / 'folder'),
    )
    script = tmp_path / 'script.py'
    script.write_text('from aiida import orm\norm.Dict({"made": "by aiida"}).store()\n')
    verdi(home, '-p', 'made-by-aiida', 'run', str(script))
    setup_profile(home, 'sqlitedos', tmp_path / 'folder')
    check = tmp_path / 'check.py'
    check.write_text('from aiida import orm\nprint(orm.QueryBuilder().append(orm.Dict).one()[0].get_dict())\n')
    assert verdi(home, '-p', 'sqlitedos', 'run', str(check)).strip() == "{'made': 'by aiida'}"


CONCURRENT_WORKER = """
import sys, time
from aiida import load_profile, orm
load_profile(sys.argv[1])
role, seconds = sys.argv[2], float(sys.argv[3])
done = locked = other = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        if role == 'writer':
            # A write inside a query iteration: the pattern that needs the iteration's transaction to start only
            # at the first write (a read snapshot cannot become a write once another process has committed).
            node = orm.Dict({'n': done}).store()
            for [same] in orm.QueryBuilder().append(orm.Dict, filters={'id': node.pk}).iterall():
                same.base.extras.set('seen', True)
        else:
            orm.QueryBuilder().append(orm.Dict, filters={'extras.seen': True}).count()
            for _ in orm.QueryBuilder().append(orm.Dict, project='id').iterall(batch_size=50):
                pass
        done += 1
    except Exception as exc:
        if 'locked' in str(exc):
            locked += 1
        else:
            other += 1
            print(repr(exc), file=sys.stderr)
print(done, locked, other)
"""


@pytest.mark.slow
def test_three_writers_and_two_readers_never_see_a_locked_database(tmp_path: Path) -> None:
    """Separate processes through aiida's ORM on one ``sqlitedos.dos`` profile: no "database is locked", also for
    writes made while iterating a query (with a deferred transaction around the iteration, about 1 in 8 of them
    failed)."""
    home = tmp_path / 'home'
    setup_profile(home, 'shared', tmp_path / 'shared')
    environment = {**os.environ, 'AIIDA_PATH': str(home)}
    roles = ['writer'] * 3 + ['reader'] * 2
    workers = [
        subprocess.Popen(
            [sys.executable, '-c', CONCURRENT_WORKER, 'shared', role, '6'],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in roles
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        results.append([int(value) for value in out.split()[-3:]])
    writes = sum(done for (done, _, _), role in zip(results, roles) if role == 'writer')
    reads = sum(done for (done, _, _), role in zip(results, roles) if role == 'reader')
    assert [locked for _, locked, _ in results] == [0] * 5
    assert [other for _, _, other in results] == [0] * 5
    assert writes > 0 and reads > 0
    count = tmp_path / 'count.py'
    count.write_text('from aiida import orm\nprint(orm.QueryBuilder().append(orm.Dict).count())\n')
    assert int(verdi(home, '-p', 'shared', 'run', str(count)).split()[0]) == writes
