"""Everything in the aiida-made fixture storage reads back through the entity API as aiida reports it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from sqlitedos import LinkType


def iso(value: dt.datetime) -> str:
    return value.isoformat()


def test_counts(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    counts = manifest['counts']
    storage = fixture_storage
    assert storage.nodes.count() == counts['nodes']
    assert storage.users.count() == counts['users']
    assert storage.computers.count() == counts['computers']
    assert storage.authinfos.count() == counts['authinfos']
    assert storage.groups.count() == counts['groups']
    assert storage.comments.count() == counts['comments']
    assert storage.logs.count() == counts['logs']
    assert sum(group.count() for group in storage.groups.all()) == counts['group_node_pairs']
    entities = storage.get_info()['entities']
    assert entities['Links']['count'] == counts['links'] and entities['Nodes']['count'] == counts['nodes']


def test_nodes(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    nodes = fixture_storage.nodes.all()
    assert [node.uuid for node in nodes] == [entry['uuid'] for entry in manifest['nodes']]
    for node, entry in zip(nodes, manifest['nodes']):
        assert node.is_stored and node.node_type == entry['node_type'] and node.process_type == entry['process_type']
        assert (node.label, node.description) == (entry['label'], entry['description'])
        assert node.attributes == entry['attributes'] and node.extras == entry['extras']
        assert dict(node.attributes_items()) == entry['attributes']
        assert sorted(node.extras_keys()) == sorted(entry['extras'])
        assert (iso(node.ctime), iso(node.mtime)) == (entry['ctime'], entry['mtime'])
        assert node.user.email == entry['user_email']
        assert (node.computer.label if node.computer else None) == entry['computer_label']
        assert node.repository_metadata == entry['repository_metadata']
        assert fixture_storage.nodes.get(uuid=entry['uuid']) == node


def test_links(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    found = set()
    for node in fixture_storage.nodes.all():
        for triple in node.get_outgoing():
            found.add((node.uuid, triple.node.uuid, triple.link_type.value, triple.link_label))
        incoming = {(t.node.uuid, node.uuid, t.link_type.value, t.link_label) for t in node.get_incoming()}
        assert incoming <= {(e['input'], e['output'], e['type'], e['label']) for e in manifest['links']}
    expected = {(entry['input'], entry['output'], entry['type'], entry['label']) for entry in manifest['links']}
    assert found == expected and len(manifest['links']) == len(expected)


def test_groups(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    groups = {group.uuid: group for group in fixture_storage.groups.all()}
    assert set(groups) == {entry['uuid'] for entry in manifest['groups']}
    for entry in manifest['groups']:
        group = groups[entry['uuid']]
        assert (group.label, group.type_string) == (entry['label'], entry['type_string'])
        assert group.description == entry['description']
        assert group.extras == entry['extras']
        assert sorted(node.uuid for node in group.nodes) == sorted(entry['node_uuids'])
        assert group.count() == len(entry['node_uuids'])


def test_users_computer_authinfo(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    emails = {entry['user_email'] for entry in manifest['nodes']}
    users = {user.email: user for user in fixture_storage.users.all()}
    assert emails <= set(users)
    assert (users['fixture@example.org'].first_name, users['fixture@example.org'].last_name) == ('Fix', 'Ture')
    labels = {entry['computer_label'] for entry in manifest['nodes']} - {None}
    assert set(fixture_storage.computers.list_names()) == labels
    (computer,) = fixture_storage.computers.all()
    assert computer.get_scheduler_type() == 'core.direct' and computer.get_transport_type() == 'core.local'
    assert computer.get_metadata() == {'workdir': '/scratch/{username}/aiida_run/'}
    (authinfo,) = fixture_storage.authinfos.all()
    assert authinfo.computer == computer and authinfo.enabled is True and authinfo.get_auth_params() == {}


def test_comments_and_logs(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    uuids = {entry['uuid'] for entry in manifest['nodes']}
    comments = fixture_storage.comments.all()
    assert [comment.content for comment in comments] == ['a comment on node 3', 'second comment']
    assert {comment.user.email for comment in comments} == {'fixture@example.org', 'second-public@example.org'}
    for comment in comments:
        assert comment.node.uuid in uuids and comment.ctime <= comment.mtime
    logs = fixture_storage.logs.all()
    expected = [('WARNING', 'a warning log line'), ('ERROR', 'an error log line')]
    assert [(log.levelname, log.message) for log in logs] == expected
    for log in logs:
        node = fixture_storage.nodes.get(log.dbnode_id)
        assert node.node_type == 'process.calculation.calcjob.CalcJobNode.'
        assert log.metadata['dbnode_id'] == log.dbnode_id and log.loggername == log.metadata['name']


@pytest.mark.parametrize('link_type', list(LinkType), ids=lambda t: t.value)
def test_link_types_read_back(fixture_storage: Any, manifest: dict[str, Any], link_type: LinkType) -> None:
    expected = sum(1 for entry in manifest['links'] if entry['type'] == link_type.value)
    found = sum(len(node.get_outgoing(link_type=link_type)) for node in fixture_storage.nodes.all())
    assert found == expected


def test_fixture_can_be_extended(fixture_storage: Any, manifest: dict[str, Any]) -> None:
    """Writing to the aiida-made storage keeps the link rules: a new calculation consumes fixture data."""
    storage = fixture_storage
    user = storage.users.get(email='fixture@example.org')
    data = storage.nodes.get(uuid=manifest['nodes'][0]['uuid'])
    calc = storage.nodes.create(node_type='process.calculation.CalculationNode.', user=user).store()
    calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    assert [t.node for t in calc.get_incoming()] == [data]
    assert storage.get_info()['entities']['Links']['count'] == manifest['counts']['links'] + 1
