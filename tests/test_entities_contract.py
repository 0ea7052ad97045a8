"""The backend entity API, run against the folder storage and the temp backend (``storage`` fixture)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sqlitedos import EntityTypes, LinkType
from sqlitedos.entities import BackendNode, build_entity
from sqlitedos.exceptions import (
    InvalidOperation,
    ModificationNotAllowed,
    MultipleObjectsError,
    NotExistent,
    NotExistentAttributeError,
    UniquenessError,
    ValidationError,
)


def make_node(storage: Any, node_type: str = 'data.core.int.Int.', **kwargs: Any) -> BackendNode:
    return storage.nodes.create(node_type=node_type, user=storage.default_user, **kwargs).store()


def raw_row(storage: Any, table: str, pk: int) -> dict[str, Any]:
    cursor = storage.get_session().execute(f'SELECT * FROM {table} WHERE id = ?', (pk,))
    return dict(zip([d[0] for d in cursor.description], cursor.fetchone()))


# --- users, computers, authinfos ----------------------------------------------------------------------------------


def test_default_user(storage: Any) -> None:
    user = storage.default_user
    assert user.is_stored and user.email == 'user@email.com'
    assert storage._default_user is user
    storage.reset_default_user()
    assert storage.default_user == user


def test_user_create_store_update(storage: Any) -> None:
    user = storage.users.create(email='a@b.c', first_name='A')
    assert not user.is_stored and user.id is None and user.pk is None
    assert user.store() is user and user.is_stored and user.id == user.pk
    user.last_name = 'B'
    user.institution = 'Lab'
    user.first_name = 'Aa'
    again = storage.users.get(email='a@b.c')
    assert (again.first_name, again.last_name, again.institution) == ('Aa', 'B', 'Lab')
    assert again == user and hash(again) == hash(user)
    assert {u.email for u in storage.users.all()} == {'user@email.com', 'a@b.c'}
    assert storage.users.count() == 2
    storage.users.delete(user.pk)
    with pytest.raises(NotExistent):
        storage.users.get(user.pk)


def test_computer(storage: Any) -> None:
    computer = storage.computers.create(
        label='localhost',
        hostname='h',
        description='d',
        scheduler_type='core.direct',
        transport_type='core.local',
        metadata={'workdir': '/tmp', 'mpirun_command': ['mpirun']},
    ).store()
    assert len(computer.uuid) == 36
    computer.set_label('other')
    computer.set_hostname('h2')
    computer.set_description('d2')
    computer.set_scheduler_type('core.slurm')
    computer.set_transport_type('core.ssh')
    computer.set_metadata({'shebang': '#!/bin/bash'})
    loaded = storage.computers.get(computer.pk)
    assert (loaded.label, loaded.hostname, loaded.description) == ('other', 'h2', 'd2')
    assert (loaded.get_scheduler_type(), loaded.get_transport_type()) == ('core.slurm', 'core.ssh')
    assert loaded.get_metadata() == {'shebang': '#!/bin/bash'}
    assert storage.computers.list_names() == ['other']
    copy = computer.copy()
    assert not copy.is_stored and copy.uuid != computer.uuid and copy.label == 'other'
    with pytest.raises(InvalidOperation):
        storage.computers.create(label='x').copy()
    make_node(storage, computer=computer)
    with pytest.raises(InvalidOperation):
        storage.computers.delete(computer.pk)
    assert storage.computers.count() == 1


def test_collection_create_takes_the_entity_arguments_positionally(storage: Any) -> None:
    """``create`` passes positional arguments on to the entity class, as the collections that name theirs do."""
    computer = storage.computers.create('localhost', 'h').store()
    assert (storage.computers.get(computer.pk).label, storage.computers.get(computer.pk).hostname) == ('localhost', 'h')


def test_authinfo(storage: Any) -> None:
    computer = storage.computers.create(label='c').store()
    user = storage.default_user
    authinfo = storage.authinfos.create(computer=computer, user=user, auth_params={'safe_interval': 0}).store()
    assert authinfo.enabled is True
    assert authinfo.computer == computer and authinfo.user == user
    authinfo.enabled = False
    authinfo.set_auth_params({'port': 22})
    authinfo.set_metadata({'m': 1})
    loaded = storage.authinfos.get(authinfo.pk)
    assert loaded.enabled is False and loaded.get_auth_params() == {'port': 22} and loaded.get_metadata() == {'m': 1}
    assert raw_row(storage, 'db_dbauthinfo', authinfo.pk)['enabled'] == 0
    storage.authinfos.delete(authinfo.pk)
    assert storage.authinfos.count() == 0
    with pytest.raises(NotExistent):
        storage.authinfos.delete(authinfo.pk)


# --- nodes --------------------------------------------------------------------------------------------------------


def test_node_store_fills_values(storage: Any) -> None:
    node = storage.nodes.create(node_type='data.core.int.Int.', user=storage.default_user)
    assert not node.is_stored and node.ctime is None and len(node.uuid) == 36
    node.store()
    row = raw_row(storage, 'db_dbnode', node.pk)
    assert row['attributes'] == '{}' and row['extras'] == '{}' and row['repository_metadata'] == '{}'
    assert row['label'] == '' and row['description'] == '' and row['process_type'] is None
    assert row['dbcomputer_id'] is None and row['user_id'] == storage.default_user.pk
    assert len(row['ctime']) == 26 and row['ctime'][10] == ' ' and row['mtime'] >= row['ctime']
    assert node.ctime.tzinfo is not None
    assert node.store() is node


def test_node_properties(storage: Any) -> None:
    computer = storage.computers.create(label='c').store()
    ctime = dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    node = make_node(
        storage,
        'process.calculation.calcjob.CalcJobNode.',
        process_type='aiida.calculations:x',
        label='l',
        description='d',
        ctime=ctime,
        computer=computer,
    )
    assert node.ctime == ctime and node.computer == computer and node.user == storage.default_user
    before = node.mtime
    node.label = 'l2'
    node.description = 'd2'
    node.process_type = 'p'
    node.computer = None
    other = storage.users.create(email='o@x').store()
    node.user = other
    loaded = storage.nodes.get(node.pk)
    assert (loaded.label, loaded.description, loaded.process_type) == ('l2', 'd2', 'p')
    assert loaded.computer is None and loaded.user == other and loaded.mtime > before
    assert loaded.node_type == 'process.calculation.calcjob.CalcJobNode.'


def test_attributes(storage: Any) -> None:
    node = storage.nodes.create(node_type='data.core.dict.Dict.', user=storage.default_user)
    node.set_attribute('a', 1)
    node.set_attribute_many({'b': 2.5, 'c': [1, {'d': None}]})
    node.store()
    assert node.get_attribute('a') == 1 and node.get_attribute_many(['b', 'c']) == [2.5, [1, {'d': None}]]
    with pytest.raises(AttributeError):
        node.get_attribute('missing')
    mtime = node.mtime
    node.set_attribute('e', (1, 2))
    assert storage.nodes.get(node.pk).get_attribute('e') == [1, 2]
    assert storage.nodes.get(node.pk).mtime > mtime
    node.delete_attribute('a')
    with pytest.raises(NotExistentAttributeError):
        node.delete_attribute('a')
    with pytest.raises(AttributeError):
        node.delete_attribute_many(['b', 'zz'])
    assert 'b' in node.attributes
    node.delete_attribute_many(['b'])
    assert sorted(node.attributes_keys()) == ['c', 'e']
    assert dict(node.attributes_items()) == {'c': [1, {'d': None}], 'e': [1, 2]}
    node.reset_attributes({'x': 1})
    assert storage.nodes.get(node.pk).attributes == {'x': 1}
    node.clear_attributes()
    assert storage.nodes.get(node.pk).attributes == {}
    for bad in ('', 'a.b', 1):
        with pytest.raises(ValidationError):
            node.set_attribute(bad, 1)


@pytest.mark.parametrize('kind', ['node', 'group'])
def test_extras(storage: Any, kind: str) -> None:
    if kind == 'node':
        entity = storage.nodes.create(node_type='data.Data.', user=storage.default_user)
        reload = storage.nodes.get
    else:
        entity = storage.groups.create(label='g', user=storage.default_user)
        reload = storage.groups.get
    entity.set_extra('a', 1)
    entity.set_extra_many({'b': 'x', 'c': {'d': [True]}})
    entity.store()
    assert reload(entity.pk).extras == {'a': 1, 'b': 'x', 'c': {'d': [True]}}
    assert entity.get_extra('a') == 1 and entity.get_extra_many(['b']) == ['x']
    with pytest.raises(AttributeError):
        entity.get_extra('zz')
    entity.set_extra('a', 2)
    entity.delete_extra('b')
    with pytest.raises(AttributeError):
        entity.delete_extra('b')
    entity.delete_extra_many(['c'])
    assert reload(entity.pk).extras == {'a': 2}
    assert list(entity.extras_keys()) == ['a'] and list(entity.extras_items()) == [('a', 2)]
    entity.reset_extras({'z': None})
    assert reload(entity.pk).extras == {'z': None}
    entity.clear_extras()
    assert reload(entity.pk).extras == {}


def test_clone_and_clean_values(storage: Any) -> None:
    node = storage.nodes.create(node_type='data.Data.', user=storage.default_user, label='l')
    node.set_attribute('f', 0.1 + 0.2)
    node.set_attribute('big', 1e20)
    node.clean_values()
    assert node.get_attribute('f') == 0.3 and node.get_attribute('big') == 10**20
    node.store()
    clone = node.clone()
    assert not clone.is_stored and clone.uuid != node.uuid and clone.label == 'l'
    assert clone.attributes == node.attributes and clone.attributes is not node.attributes
    clone.store()
    assert clone.pk != node.pk


def test_repository_metadata_contract(storage: Any) -> None:
    node = storage.nodes.create(node_type='data.Data.', user=storage.default_user)
    assert node.repository_metadata == {}
    tree = {'o': {'a.txt': {'k': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'}}}
    node.repository_metadata = tree
    node.store()
    assert storage.nodes.get(node.pk).repository_metadata == tree
    with pytest.raises(ModificationNotAllowed):
        node.repository_metadata = {}
    assert node.backend is storage


def test_node_collection_get_delete(storage: Any) -> None:
    node = make_node(storage)
    assert storage.nodes.get(node.pk).uuid == node.uuid
    assert storage.nodes.get(uuid=node.uuid) == node
    assert storage.nodes.find(id={'in': [node.pk]}) == [node]
    make_node(storage, label='same')
    make_node(storage, label='same')
    with pytest.raises(MultipleObjectsError):
        storage.nodes.get(label='same')
    storage.nodes.delete(node.pk)
    with pytest.raises(NotExistent):
        storage.nodes.get(node.pk)
    with pytest.raises(NotExistent):
        storage.nodes.delete(node.pk)
    with pytest.raises(TypeError):
        storage.nodes.delete('1')


# --- links --------------------------------------------------------------------------------------------------------


def test_links_and_neighbours(storage: Any) -> None:
    data = make_node(storage)
    calc = make_node(storage, 'process.calculation.calcfunction.CalcFunctionNode.')
    calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    result = storage.nodes.create(node_type='data.core.int.Int.', user=storage.default_user)
    result.store(links=[(calc, LinkType.CREATE, 'result')])
    assert [(t.node, t.link_type, t.link_label) for t in calc.get_incoming()] == [(data, LinkType.INPUT_CALC, 'x')]
    assert [t.node for t in calc.get_outgoing(link_type=LinkType.CREATE)] == [result]
    assert calc.get_outgoing(link_type=[LinkType.RETURN]) == []
    assert storage.get_info()['entities']['Links'] == {'count': 2}


# --- groups -------------------------------------------------------------------------------------------------------


def test_groups(storage: Any) -> None:
    user = storage.default_user
    group = storage.groups.create(label='g', user=user, type_string='core', description='d').store()
    assert group.time.tzinfo is not None and len(group.uuid) == 36 and group.type_string == 'core'
    nodes = [make_node(storage) for _ in range(3)]
    group.add_nodes(nodes[:2])
    group.add_nodes(nodes[1:])  # an already present node is skipped
    assert group.count() == 3 and group.nodes == nodes
    group.remove_nodes([nodes[0]])
    assert group.nodes == nodes[1:]
    group.clear()
    assert group.count() == 0
    group.label = 'g2'
    group.description = 'd2'
    loaded = storage.groups.get(group.pk)
    assert (loaded.label, loaded.description, loaded.user) == ('g2', 'd2', user)
    other = storage.groups.create(label='g3', user=user, type_string='core').store()
    with pytest.raises(UniquenessError):
        other.label = 'g2'
    assert other.label == 'g3'
    with pytest.raises(UniquenessError):
        storage.groups.create(label='g2', user=user, type_string='core').store()
    with pytest.raises(ValueError):
        group.add_nodes([storage.nodes.create(node_type='data.Data.', user=user)])
    with pytest.raises(TypeError):
        group.add_nodes([user])
    group.add_nodes(nodes)
    storage.groups.delete(group.pk)
    assert storage.groups.count() == 1
    assert storage.get_session().execute('SELECT count(*) FROM db_dbgroup_dbnodes').fetchone()[0] == 0


# --- comments and logs --------------------------------------------------------------------------------------------


def test_comments(storage: Any) -> None:
    node = make_node(storage)
    user = storage.default_user
    comment = storage.comments.create(node=node, user=user, content='hello').store()
    assert comment.node == node and comment.user == user and comment.content == 'hello'
    assert comment.ctime <= comment.mtime and len(comment.uuid) == 36
    before = comment.mtime
    comment.set_content('bye')
    assert storage.comments.get(comment.pk).content == 'bye' and storage.comments.get(comment.pk).mtime > before
    other = storage.users.create(email='x@y').store()
    comment.set_user(other)
    assert storage.comments.get(comment.pk).user == other
    stamp = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    comment.set_mtime(stamp)
    assert storage.comments.get(comment.pk).mtime == stamp
    second = storage.comments.create(node=node, user=user).store()
    assert second.content == ''
    assert storage.comments.delete_many({'id': {'in': [second.pk]}}) == [second.pk]
    with pytest.raises(ValidationError):
        storage.comments.delete_many({})
    with pytest.raises(TypeError):
        storage.comments.delete_many([1])
    storage.comments.delete_all()
    assert storage.comments.count() == 0


def test_logs(storage: Any) -> None:
    node = make_node(storage)
    log = storage.logs.create(
        time=None, loggername='aiida.x', levelname='REPORT', dbnode_id=node.pk, message='m', metadata={'a': [1]}
    ).store()
    loaded = storage.logs.get(log.pk)
    assert (loaded.loggername, loaded.levelname, loaded.message) == ('aiida.x', 'REPORT', 'm')
    assert loaded.dbnode_id == node.pk
    assert loaded.metadata == {'a': [1]} and loaded.time.tzinfo is not None and loaded.uuid == log.uuid
    storage.logs.delete(log.pk)
    assert storage.logs.all() == []


# --- storage-level API --------------------------------------------------------------------------------------------


def test_get_backend_entity_and_build_entity(storage: Any) -> None:
    node = make_node(storage, label='l')
    row = raw_row(storage, 'db_dbnode', node.pk)
    built = build_entity(storage, 'node', row)
    assert built == node and built.label == 'l' and built.is_stored
    assert storage.get_backend_entity(row, 'node') == node
    assert storage.get_backend_entity(row, 'db_dbnode') == node
    assert storage.get_backend_entity(node) is node
    user_row = raw_row(storage, 'db_dbuser', storage.default_user.pk)
    assert build_entity(storage, 'user', user_row).email == 'user@email.com'
    with pytest.raises(Exception, match='orm_base'):
        build_entity(storage, 'nope', row)


def test_get_mapper_from_entity(storage: Any) -> None:
    mapper = storage._get_mapper_from_entity(EntityTypes.LINK, with_pk=True)
    assert mapper.table == 'db_dblink' and mapper.columns == ('id', 'input_id', 'output_id', 'label', 'type')
    assert 'id' not in storage._get_mapper_from_entity('node', False).columns


def test_get_info(storage: Any) -> None:
    storage.computers.create(label='c').store()
    make_node(storage, 'process.workflow.WorkflowNode.', process_type='p')
    make_node(storage)
    storage.groups.create(label='g', user=storage.default_user, type_string='core').store()
    info = storage.get_info()
    assert info['entities'] == {
        'Users': {'count': 1},
        'Computers': {'count': 1},
        'Nodes': {'count': 2},
        'Groups': {'count': 1},
        'Comments': {'count': 0},
        'Logs': {'count': 0},
        'Links': {'count': 0},
    }
    detailed = storage.get_info(detailed=True)['entities']
    assert detailed['Users']['emails'] == ['user@email.com'] and detailed['Computers']['labels'] == ['c']
    assert detailed['Nodes']['node_types'] == ['data.core.int.Int.', 'process.workflow.WorkflowNode.']
    assert detailed['Nodes']['process_types'] == ['p'] and detailed['Groups']['type_strings'] == ['core']
    assert detailed['Nodes']['first_created'].endswith('+00:00')


def test_transaction_groups_entity_writes(storage: Any) -> None:
    with pytest.raises(RuntimeError), storage.transaction():
        make_node(storage)
        storage.users.create(email='t@t').store()
        raise RuntimeError
    assert storage.nodes.count() == 0 and storage.users.count() == 1


def test_clear_folder_storage(dos_storage: Any) -> None:
    make_node(dos_storage)
    dos_storage.set_global_variable('k', 1)
    old_uuid = dos_storage.get_global_variable('repository|uuid')
    dos_storage._clear()
    assert dos_storage.nodes.count() == 0 and dos_storage.users.count() == 0
    assert dos_storage.get_global_variable('k') == 1
    assert dos_storage.get_global_variable('repository|uuid') != old_uuid
    assert dos_storage.default_user is None


def test_clear_temp_is_not_implemented(temp_storage: Any) -> None:
    with pytest.raises(NotImplementedError):
        temp_storage._clear()


def test_repository_property_is_lazy_and_cached(storage: Any) -> None:
    from sqlitedos.repository.tree import NodeRepository

    node = storage.nodes.create(node_type='data.Data.', user=storage.default_user)
    assert node._repository is None
    repository = node.repository
    assert isinstance(repository, NodeRepository) and node.repository is repository
    node.store()
    assert storage.nodes.get(node.pk).repository is not repository


def test_files_stored_with_the_node(storage: Any) -> None:
    node = storage.nodes.create(node_type='data.core.folder.FolderData.', user=storage.default_user)
    node.repository.put_object_from_bytes(b'hi', 'd/a.txt')
    node.store()
    loaded = storage.nodes.get(node.pk)
    assert loaded.repository_metadata == node.repository_metadata
    assert loaded.repository_metadata['o']['d']['o']['a.txt']['k'] == (
        '8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4'
    )
    assert loaded.repository.get_object_content('d/a.txt', 'rb') == b'hi'
