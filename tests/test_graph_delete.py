"""Deleting nodes with aiida's DELETE traversal rules (``sqlitedos.graph``) and ``delete_nodes_and_connections``."""

from __future__ import annotations

from typing import Any

import pytest

from sqlitedos import LinkType
from sqlitedos.graph import EXPORT_RULES, delete_nodes, resolve_rules, traverse

DATA = 'data.core.int.Int.'
CALC = 'process.calculation.calcfunction.CalcFunctionNode.'
WORK = 'process.workflow.workfunction.WorkFunctionNode.'


def make(storage: Any, node_type: str) -> Any:
    return storage.nodes.create(node_type=node_type, user=storage.default_user).store()


@pytest.fixture
def graph(storage: Any) -> dict[str, Any]:
    """x -> calc -> out; work calls calc, has x as input and returns out; out -> calc2 -> out2; y unrelated."""
    nodes = {
        name: make(storage, kind)
        for name, kind in (
            ('x', DATA),
            ('calc', CALC),
            ('out', DATA),
            ('work', WORK),
            ('calc2', CALC),
            ('out2', DATA),
            ('y', DATA),
        )
    }
    nodes['calc'].add_incoming(nodes['x'], LinkType.INPUT_CALC, 'x')
    nodes['out'].add_incoming(nodes['calc'], LinkType.CREATE, 'result')
    nodes['work'].add_incoming(nodes['x'], LinkType.INPUT_WORK, 'x')
    nodes['calc'].add_incoming(nodes['work'], LinkType.CALL_CALC, 'CALL')
    nodes['out'].add_incoming(nodes['work'], LinkType.RETURN, 'result')
    nodes['calc2'].add_incoming(nodes['out'], LinkType.INPUT_CALC, 'x')
    nodes['out2'].add_incoming(nodes['calc2'], LinkType.CREATE, 'result')
    group = storage.groups.create(label='g', user=storage.default_user).store()
    group.add_nodes(list(nodes.values()))
    storage.comments.create(node=nodes['out'], user=storage.default_user, content='c').store()
    storage.logs.create(time=None, loggername='l', levelname='INFO', dbnode_id=nodes['calc'].pk).store()
    nodes['group'] = group
    return nodes


def pks(graph: dict[str, Any], *names: str) -> set[int]:
    return {graph[name].pk for name in names}


def test_deleting_an_input_takes_everything_downstream(storage: Any, graph: dict[str, Any]) -> None:
    expected = pks(graph, 'x', 'calc', 'out', 'work', 'calc2', 'out2')
    assert delete_nodes(storage, [graph['x'].pk]) == expected
    assert storage.nodes.count() == 7  # a dry run deletes nothing
    assert delete_nodes(storage, [graph['x'].pk], dry_run=False) == expected
    assert [node.pk for node in storage.nodes.all()] == [graph['y'].pk]
    assert graph['group'].nodes == [graph['y']]
    connection = storage.get_session()
    for table in ('db_dblink', 'db_dbcomment', 'db_dblog'):
        assert connection.execute(f'SELECT count(*) FROM {table}').fetchone()[0] == 0


def test_deleting_an_output_takes_its_creator_and_caller(storage: Any, graph: dict[str, Any]) -> None:
    # create_backward and return_backward: out's creator calc and returning work go, and their outputs with them
    assert delete_nodes(storage, [graph['out2'].pk]) == pks(graph, 'out2', 'calc2')
    assert delete_nodes(storage, [graph['out'].pk]) == pks(graph, 'out', 'calc', 'work', 'calc2', 'out2')


def test_toggles(storage: Any, graph: dict[str, Any]) -> None:
    # without create_forward, deleting calc2 keeps out2
    assert delete_nodes(storage, [graph['calc2'].pk], create_forward=False) == pks(graph, 'calc2')
    assert delete_nodes(storage, [graph['work'].pk], call_calc_forward=False) == pks(graph, 'work')
    with pytest.raises(ValueError, match='cannot be toggled'):
        delete_nodes(storage, [graph['x'].pk], input_calc_forward=False)
    with pytest.raises(ValueError, match='unknown traversal rule'):
        delete_nodes(storage, [graph['x'].pk], nonsense=True)
    with pytest.raises(TypeError):
        resolve_rules(EXPORT_RULES, create_backward='yes')


def test_missing_pks_are_ignored(storage: Any, graph: dict[str, Any]) -> None:
    assert delete_nodes(storage, [10_000]) == set()
    assert delete_nodes(storage, [], dry_run=False) == set()
    assert storage.nodes.count() == 7


def test_export_rules(storage: Any, graph: dict[str, Any]) -> None:
    # exporting out2 brings its provenance: calc2, out, calc, x, and work (return_forward... via calc's caller)
    reached = traverse(storage, [graph['out2'].pk], EXPORT_RULES)
    assert reached == pks(graph, 'out2', 'calc2', 'out', 'calc', 'x', 'work')


def test_delete_nodes_and_connections_needs_a_transaction(storage: Any, graph: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match='Cannot delete nodes and links outside a transaction'):
        storage.delete_nodes_and_connections([graph['y'].pk])
    with storage.transaction():
        storage.delete_nodes_and_connections([graph['out2'].pk])
    assert storage.nodes.count() == 6


def test_deleting_without_the_closure_fails_and_keeps_everything(storage: Any, graph: dict[str, Any]) -> None:
    """Deleting a node but not its outgoing links' targets is fine for links (they go too); the rows stay consistent."""
    with storage.transaction():
        storage.delete_nodes_and_connections([graph['calc'].pk])
    assert storage.get_session().execute('PRAGMA foreign_key_check').fetchall() == []
