"""Link rules (SPEC 3.2): node kinds, degrees, labels, cycles, storages."""

from __future__ import annotations

from typing import Any

import pytest

from sqlitedos import LinkType
from sqlitedos.exceptions import IntegrityError, ModificationNotAllowed, NotExistent
from sqlitedos.links import DELETE_RULES, EXPORT_RULES, LINK_RULES, LinkValidationError, node_kind

DATA = 'data.core.int.Int.'
CALC = 'process.calculation.calcjob.CalcJobNode.'
WORK = 'process.workflow.workchain.WorkChainNode.'
KINDS = {'data': DATA, 'calculation': CALC, 'workflow': WORK}


def make(storage: Any, node_type: str) -> Any:
    return storage.nodes.create(node_type=node_type, user=storage.default_user).store()


def link_count(storage: Any) -> int:
    return storage.get_session().execute('SELECT count(*) FROM db_dblink').fetchone()[0]


def test_link_type_values() -> None:
    assert [t.value for t in LinkType] == ['create', 'return', 'input_calc', 'input_work', 'call_calc', 'call_work']
    assert LinkType('create') is LinkType.CREATE and LinkType.CREATE == 'create'


def test_node_kinds() -> None:
    assert node_kind(DATA) == 'data' and node_kind(CALC) == 'calculation' and node_kind(WORK) == 'workflow'
    assert node_kind('process.ProcessNode.') is None and node_kind('') is None


@pytest.mark.parametrize('link_type', list(LinkType), ids=lambda t: t.value)
def test_allowed_kinds(storage: Any, link_type: LinkType) -> None:
    """Each link type is accepted between its kinds, and refused for every other pair of kinds."""
    rule = LINK_RULES[link_type]
    for source_kind, source_type in KINDS.items():
        for target_kind, target_type in KINDS.items():
            source, target = make(storage, source_type), make(storage, target_type)
            if (source_kind, target_kind) == (rule.source, rule.target):
                target.add_incoming(source, link_type, 'label')
            else:
                with pytest.raises(LinkValidationError, match=f'cannot add a {link_type.value} link'):
                    target.add_incoming(source, link_type, 'label')
    assert link_count(storage) == 1


def test_error_is_value_error_and_integrity_error(storage: Any) -> None:
    data, work = make(storage, DATA), make(storage, WORK)
    with pytest.raises(ValueError):
        data.add_incoming(work, LinkType.INPUT_WORK, 'x')
    with pytest.raises(IntegrityError):
        data.add_incoming(work, LinkType.INPUT_WORK, 'x')


def test_degrees(storage: Any) -> None:
    calc, other_calc = make(storage, CALC), make(storage, CALC)
    data, data2 = make(storage, DATA), make(storage, DATA)
    # input_calc: indegree unique pair: same label twice into one calc is refused, a new label is fine
    calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    with pytest.raises(LinkValidationError, match='already has an incoming input_calc link with label "x"'):
        calc.add_incoming(data2, LinkType.INPUT_CALC, 'x')
    calc.add_incoming(data2, LinkType.INPUT_CALC, 'y')
    # outdegree unique triple: the same data may feed another calc with the same label
    other_calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    # create: indegree unique (a data node has one creator), outdegree unique pair
    out = make(storage, DATA)
    out.add_incoming(calc, LinkType.CREATE, 'result')
    with pytest.raises(LinkValidationError, match='already has an incoming create link'):
        out.add_incoming(other_calc, LinkType.CREATE, 'other')
    out2 = make(storage, DATA)
    with pytest.raises(LinkValidationError, match='outgoing create link with label "result"'):
        out2.add_incoming(calc, LinkType.CREATE, 'result')
    # return: indegree unique triple: two workflows may return the same node with the same label
    work, work2 = make(storage, WORK), make(storage, WORK)
    out.add_incoming(work, LinkType.RETURN, 'result')
    out.add_incoming(work2, LinkType.RETURN, 'result')
    with pytest.raises(LinkValidationError, match='outgoing return link with label "result"'):
        out.add_incoming(work, LinkType.RETURN, 'result')
    # call_calc: indegree unique (a calculation has one caller)
    calc.add_incoming(work, LinkType.CALL_CALC, 'CALL')
    with pytest.raises(LinkValidationError, match='already has an incoming call_calc link'):
        calc.add_incoming(work2, LinkType.CALL_CALC, 'CALL')
    # call_work: triple unique at the source
    sub = make(storage, WORK)
    sub.add_incoming(work, LinkType.CALL_WORK, 'CALL')
    with pytest.raises(LinkValidationError):
        sub.add_incoming(work, LinkType.CALL_WORK, 'CALL')
    assert link_count(storage) == 8


@pytest.mark.parametrize('label', ['_x', 'x_', 'a-b', 'a.b', 'é', ''])
def test_bad_labels(storage: Any, label: str) -> None:
    data, calc = make(storage, DATA), make(storage, CALC)
    with pytest.raises(LinkValidationError, match='invalid link label'):
        calc.add_incoming(data, LinkType.INPUT_CALC, label)
    with pytest.raises(TypeError):
        calc.add_incoming(data, LinkType.INPUT_CALC, 5)


def test_self_link_cycle_and_unstored(storage: Any) -> None:
    data, calc = make(storage, DATA), make(storage, CALC)
    with pytest.raises(LinkValidationError, match='oneself'):
        calc.add_incoming(calc, LinkType.CALL_CALC, 'x')
    data.add_incoming(calc, LinkType.CREATE, 'out')
    with pytest.raises(LinkValidationError, match='cycle'):
        calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    # a longer cycle: calc -> data -> calc2 -> data2 -> calc
    calc2, data2 = make(storage, CALC), make(storage, DATA)
    calc2.add_incoming(data, LinkType.INPUT_CALC, 'x')
    data2.add_incoming(calc2, LinkType.CREATE, 'out')
    with pytest.raises(LinkValidationError, match='cycle'):
        calc.add_incoming(data2, LinkType.INPUT_CALC, 'y')
    unstored = storage.nodes.create(node_type=DATA, user=storage.default_user)
    with pytest.raises(ModificationNotAllowed):
        calc.add_incoming(unstored, LinkType.INPUT_CALC, 'z')
    with pytest.raises(ModificationNotAllowed):
        unstored.add_incoming(calc, LinkType.CREATE, 'z')
    with pytest.raises(TypeError):
        calc.add_incoming(storage.default_user, LinkType.INPUT_CALC, 'z')
    assert link_count(storage) == 3


def test_store_with_links_is_atomic(storage: Any) -> None:
    calc = make(storage, CALC)
    data = storage.nodes.create(node_type=DATA, user=storage.default_user)
    with pytest.raises(LinkValidationError):
        data.store(links=[(calc, LinkType.CREATE, 'a'), (calc, LinkType.INPUT_CALC, 'b')])
    assert not data.is_stored and storage.nodes.count() == 1 and link_count(storage) == 0


@pytest.mark.parametrize(
    ('target_type', 'links', 'message'),
    [
        # a data node has at most one creator
        (DATA, [(CALC, LinkType.CREATE, 'a'), (CALC, LinkType.CREATE, 'b')], 'already has an incoming create link'),
        # input labels of a calculation are unique
        (CALC, [(DATA, LinkType.INPUT_CALC, 'x'), (DATA, LinkType.INPUT_CALC, 'x')], 'with label "x"'),
    ],
)
def test_store_with_links_checks_the_links_it_adds(storage: Any, target_type, links, message) -> None:
    """The target is new, so its degree and label rules are checked against the links of the same store."""
    sources = [make(storage, source_type) for source_type, _, _ in links]
    node = storage.nodes.create(node_type=target_type, user=storage.default_user)
    before = list(storage.get_session().iterdump())
    triples = [(source, link_type, label) for source, (_, link_type, label) in zip(sources, links)]
    with pytest.raises(LinkValidationError, match=message):
        node.store(links=triples)
    assert not node.is_stored
    assert list(storage.get_session().iterdump()) == before
    node.store(links=triples[:1])  # one of them alone is fine
    assert link_count(storage) == 1


def test_deleted_and_foreign_nodes(dos_storage: Any, temp_storage: Any) -> None:
    data, calc = make(dos_storage, DATA), make(dos_storage, CALC)
    dos_storage.nodes.delete(data.pk)
    with pytest.raises(NotExistent, match='deleted'):
        calc.add_incoming(data, LinkType.INPUT_CALC, 'x')
    foreign = make(temp_storage, DATA)
    with pytest.raises(LinkValidationError, match='same backend'):
        calc.add_incoming(foreign, LinkType.INPUT_CALC, 'x')


def test_traversal_rule_tables() -> None:
    assert len(DELETE_RULES) == len(EXPORT_RULES) == 12
    assert DELETE_RULES['create_forward'].toggleable and not DELETE_RULES['input_calc_forward'].toggleable
    assert EXPORT_RULES['input_calc_backward'].default and not EXPORT_RULES['input_calc_forward'].default
    assert DELETE_RULES['return_backward'].direction == 'backward'
    assert DELETE_RULES['return_backward'].link_type is LinkType.RETURN
