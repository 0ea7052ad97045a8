"""A graph written through sqlitedos's entity API reads back in aiida-core 2.9.4's ORM with every value equal,
and aiida can go on writing to that storage (a node, a link, a group member) which sqlitedos then reads."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

from sqlitedos import LinkType, SqliteDosStorage
from sqlitedos.entities import clean_value

EMAIL = 'me@lab.org'
STAMP = dt.datetime(2023, 4, 5, 6, 7, 8, 901234, tzinfo=dt.timezone.utc)


def write_graph(storage: Any) -> dict[str, Any]:
    """Every entity kind and every link type; returns what was written, keyed by name."""
    user = storage.default_user
    other = storage.users.create(email='other@lab.org', first_name='O', last_name='Ther', institution='Inst').store()
    computer = storage.computers.create(
        label='cluster',
        hostname='cluster.lab',
        description='a computer',
        scheduler_type='core.direct',
        transport_type='core.local',
        metadata={'workdir': '/scratch/{username}/', 'mpirun_command': ['mpirun', '-np']},
    ).store()
    authinfo = storage.authinfos.create(computer=computer, user=user, auth_params={'safe_interval': 0}).store()

    def node(node_type: str, **kwargs: Any) -> Any:
        return storage.nodes.create(node_type=node_type, user=kwargs.pop('user', user), **kwargs)

    nodes = {
        'int': node(
            'data.core.int.Int.',
            label='x',
            description='an int',
            attributes={'value': 3},
            extras={'tag': 'ünï', 'nested': {'a': [1, 2.5, None, True]}},
        ).store(),
        'float': node('data.core.float.Float.', attributes={'value': 0.1 + 0.2}, ctime=STAMP).store(),
        'str': node('data.core.str.Str.', attributes={'value': 'héllo'}, user=other).store(),
        'bool': node('data.core.bool.Bool.', attributes={'value': False}).store(),
        'dict': node('data.core.dict.Dict.', attributes={'big': 2**63 - 1, 'neg': -(2**63), 'l': [{'k': 'v'}]}).store(),
    }
    calc = node(
        'process.calculation.calcjob.CalcJobNode.',
        process_type='aiida.calculations:core.arithmetic.add',
        computer=computer,
        label='calc',
        attributes={'resources': {'num_machines': 1}, 'sealed': True},
    )
    calc.store(links=[(nodes['int'], LinkType.INPUT_CALC, 'x'), (nodes['float'], LinkType.INPUT_CALC, 'y')])
    work = node(
        'process.workflow.workchain.WorkChainNode.',
        process_type='aiida.workflows:core.arithmetic.multiply_add',
        attributes={'process_state': 'finished', 'exit_status': 0},
    ).store()
    sub = node('process.workflow.workchain.WorkChainNode.').store()
    work.add_incoming(nodes['int'], LinkType.INPUT_WORK, 'x')
    calc.add_incoming(work, LinkType.CALL_CALC, 'CALL')
    sub.add_incoming(work, LinkType.CALL_WORK, 'CALL')
    result = node('data.core.int.Int.', attributes={'value': 6}).store()
    result.add_incoming(calc, LinkType.CREATE, 'sum')
    result.add_incoming(work, LinkType.RETURN, 'result')
    nodes.update(calc=calc, work=work, sub=sub, result=result)
    nodes['dict'].set_extra('later', {'x': 1})
    group = storage.groups.create(
        label='grp', user=user, type_string='core', description='a group', extras={'purpose': 'interop'}
    ).store()
    group.add_nodes([nodes['int'], calc, result])
    storage.groups.create(label='empty', user=other, type_string='core.auto').store()
    comment = storage.comments.create(node=calc, user=other, content='a comment').store()
    log = storage.logs.create(
        time=STAMP,
        loggername='aiida.orm.nodes.process.calculation.calcjob.CalcJobNode',
        levelname='REPORT',
        dbnode_id=calc.pk,
        message='a log line',
        metadata={'levelno': 23, 'args': []},
    ).store()
    return {
        'nodes': nodes,
        'user': user,
        'other': other,
        'computer': computer,
        'authinfo': authinfo,
        'group': group,
        'comment': comment,
        'log': log,
    }


def test_sqlitedos_graph_reads_back_in_aiida(tmp_path: Path, load_in_aiida: Any) -> None:
    folder = tmp_path / 'store'
    profile = SqliteDosStorage.create_profile('interop', filepath=folder, default_user_email=EMAIL)
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        written = write_graph(storage)
        expected_links = {
            (t.node.uuid, n.uuid, t.link_type.value, t.link_label)
            for n in storage.nodes.all()
            for t in n.get_incoming()
        }
        owners = {n.uuid: (n.user.email, n.computer.label if n.computer else None) for n in written['nodes'].values()}
    nodes = written['nodes']
    assert {link[2] for link in expected_links} == {t.value for t in LinkType}

    with load_in_aiida(folder, default_user_email=EMAIL):
        from aiida import orm
        from aiida.common.links import LinkType as AiidaLinkType

        for ours in nodes.values():
            theirs = orm.load_node(ours.uuid)
            assert theirs.pk == ours.pk and theirs.node_type == ours.node_type
            assert theirs.process_type == ours.process_type
            assert (theirs.label, theirs.description) == (ours.label, ours.description)
            assert theirs.base.attributes.all == ours.attributes and theirs.base.extras.all == ours.extras
            assert (theirs.ctime, theirs.mtime) == (ours.ctime, ours.mtime)
            assert (theirs.user.email, theirs.computer.label if theirs.computer else None) == owners[ours.uuid]
        assert orm.load_node(nodes['int'].uuid).value == 3
        assert orm.load_node(nodes['float'].uuid).ctime == STAMP
        assert orm.load_node(nodes['dict'].uuid).get_dict()['big'] == 2**63 - 1
        links = set()
        for ours in nodes.values():
            for triple in orm.load_node(ours.uuid).base.links.get_incoming().all():
                links.add((triple.node.uuid, ours.uuid, triple.link_type.value, triple.link_label))
        assert links == expected_links

        users = {user.email: user for user in orm.User.collection.all()}
        other = users['other@lab.org']
        assert (other.first_name, other.last_name, other.institution) == ('O', 'Ther', 'Inst')
        assert orm.User.collection.get_default().email == EMAIL
        computer = orm.load_computer('cluster')
        assert computer.uuid == written['computer'].uuid and computer.hostname == 'cluster.lab'
        assert (computer.scheduler_type, computer.transport_type) == ('core.direct', 'core.local')
        assert computer.description == 'a computer'
        assert computer.get_workdir() == '/scratch/{username}/'
        assert computer.get_mpirun_command() == ['mpirun', '-np']
        authinfo = computer.get_authinfo(users[EMAIL])
        assert authinfo.enabled and authinfo.get_auth_params() == {'safe_interval': 0}

        group = orm.load_group(uuid=written['group'].uuid)
        assert (group.label, group.type_string, group.description) == ('grp', 'core', 'a group')
        assert group.base.extras.all == {'purpose': 'interop'} and group.user.email == EMAIL
        assert group.time == written['group'].time
        assert {n.uuid for n in group.nodes} == {nodes['int'].uuid, nodes['calc'].uuid, nodes['result'].uuid}
        assert orm.QueryBuilder().append(orm.Group, filters={'label': 'empty'}).count() == 1

        (comment,) = orm.load_node(nodes['calc'].uuid).base.comments.all()
        assert (comment.uuid, comment.content) == (written['comment'].uuid, 'a comment')
        assert comment.user.email == 'other@lab.org'
        assert (comment.ctime, comment.mtime) == (written['comment'].ctime, written['comment'].mtime)
        (log,) = orm.Log.collection.get_logs_for(orm.load_node(nodes['calc'].uuid))
        assert (log.uuid, log.loggername, log.levelname, log.message) == (
            written['log'].uuid,
            written['log'].loggername,
            'REPORT',
            'a log line',
        )
        assert log.time == STAMP and log.metadata == {'levelno': 23, 'args': []}

        # aiida goes on writing: a new node, an input link to a new calculation, a group member, an extra
        new = orm.Int(7).store()
        calc = orm.CalculationNode()
        calc.base.links.add_incoming(orm.load_node(nodes['result'].uuid), AiidaLinkType.INPUT_CALC, 'a')
        calc.base.links.add_incoming(new, AiidaLinkType.INPUT_CALC, 'b')
        calc.store()
        group.add_nodes(new)
        orm.load_node(nodes['int'].uuid).base.extras.set('from_aiida', [1, 'two'])
        new_uuid, calc_uuid = new.uuid, calc.uuid

    with SqliteDosStorage(profile) as storage:
        ours_new = storage.nodes.get(uuid=new_uuid)
        assert ours_new.attributes == {'value': 7} and ours_new.user.email == EMAIL
        calc = storage.nodes.get(uuid=calc_uuid)
        assert {(t.node.uuid, t.link_type, t.link_label) for t in calc.get_incoming()} == {
            (nodes['result'].uuid, LinkType.INPUT_CALC, 'a'),
            (new_uuid, LinkType.INPUT_CALC, 'b'),
        }
        assert ours_new in storage.groups.get(uuid=written['group'].uuid).nodes
        assert storage.nodes.get(uuid=nodes['int'].uuid).get_extra('from_aiida') == [1, 'two']
        # and sqlitedos can link from aiida's node in turn
        more = storage.nodes.create(node_type='data.core.int.Int.', user=storage.default_user).store()
        more.add_incoming(storage.nodes.get(uuid=calc_uuid), LinkType.CREATE, 'out')

    with load_in_aiida(folder, default_user_email=EMAIL):
        from aiida import orm

        outputs = orm.load_node(calc_uuid).base.links.get_outgoing().all()
        assert [(t.link_type.value, t.link_label) for t in outputs] == [('create', 'out')]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random attribute value: scalars (ints up to 2**70, floats of every magnitude, unicode), lists, dicts."""
    choice = rng.randrange(8 if depth < 3 else 6)
    if choice == 0:
        return rng.choice([None, True, False])
    if choice == 1:
        return rng.randint(-(2**70), 2**70)
    if choice in (2, 3):
        return rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30)
    if choice == 4:
        return float(rng.randint(-(10**20), 10**20))
    if choice == 5:
        return ''.join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randrange(6)))
    if choice == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {f'k{i}': random_value(rng, depth + 1) for i in range(rng.randrange(4))}


def test_clean_value_equals_aiidas() -> None:
    from aiida.orm.implementation.utils import clean_value as aiida_clean_value

    rng = random.Random(20261123)
    for _ in range(2000):
        value = random_value(rng)
        assert json.dumps(clean_value(value)) == json.dumps(aiida_clean_value(value)), value
    for value in (1e14, 1e13, 1e16, 1.5e-7, 0.1 + 0.2, (1, 2), {'s': {3}}, b'ab', 2**64):
        assert json.dumps(clean_value(value)) == json.dumps(aiida_clean_value(value)), value
