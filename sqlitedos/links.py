"""``LinkType`` and the rules for linking nodes (aiida's ``validate_link``), plus graph traversal rule sets."""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from sqlitedos.exceptions import IntegrityError

__all__ = (
    'DEGREE_COLUMNS',
    'DELETE_RULES',
    'EXPORT_RULES',
    'LINK_RULES',
    'LinkRule',
    'LinkType',
    'LinkValidationError',
    'TraversalRule',
    'link_exists_sql',
    'node_kind',
    'validate_link_label',
)


class LinkType(str, enum.Enum):
    """The type of a link between two nodes; the value is what ``db_dblink.type`` holds."""

    CREATE = 'create'
    RETURN = 'return'
    INPUT_CALC = 'input_calc'
    INPUT_WORK = 'input_work'
    CALL_CALC = 'call_calc'
    CALL_WORK = 'call_work'


class LinkValidationError(IntegrityError, ValueError):
    """A link breaks one of the rules of the provenance graph (both an ``IntegrityError`` and a ``ValueError``)."""


#: node kind -> the ``node_type`` prefix that makes a node of that kind (aiida's ORM classes).
KIND_PREFIXES: dict[str, str] = {
    'data': 'data.',
    'calculation': 'process.calculation.',
    'workflow': 'process.workflow.',
}

Degree = str  # 'unique', 'unique_pair' or 'unique_triple'


class LinkRule(NamedTuple):
    """Which node kinds a link type joins, and its uniqueness at the source (out) and target (in) ends."""

    source: str
    target: str
    outdegree: Degree
    indegree: Degree


LINK_RULES: dict[LinkType, LinkRule] = {
    LinkType.CALL_CALC: LinkRule('workflow', 'calculation', 'unique_triple', 'unique'),
    LinkType.CALL_WORK: LinkRule('workflow', 'workflow', 'unique_triple', 'unique'),
    LinkType.CREATE: LinkRule('calculation', 'data', 'unique_pair', 'unique'),
    LinkType.INPUT_CALC: LinkRule('data', 'calculation', 'unique_triple', 'unique_pair'),
    LinkType.INPUT_WORK: LinkRule('data', 'workflow', 'unique_triple', 'unique_pair'),
    LinkType.RETURN: LinkRule('workflow', 'data', 'unique_pair', 'unique_triple'),
}

#: The degree rules as ``db_dblink`` columns: a link of a type whose rule at an end is ``degree`` must differ from
#: every other link of that type in ``DEGREE_COLUMNS[end][degree]``. ``out``: among the links leaving a node (the
#: ``outdegree``), ``in``: among those reaching it (``indegree``). Link validation and ``verify`` both read it.
DEGREE_COLUMNS: dict[str, dict[Degree, tuple[str, ...]]] = {
    'out': {
        'unique': ('input_id',),
        'unique_pair': ('input_id', 'label'),
        'unique_triple': ('input_id', 'output_id', 'label'),
    },
    'in': {
        'unique': ('output_id',),
        'unique_pair': ('output_id', 'label'),
        'unique_triple': ('output_id', 'input_id', 'label'),
    },
}

#: Link types along which data provenance flows; a cycle through them is refused.
PROVENANCE_LINK_TYPES: tuple[LinkType, ...] = (LinkType.CREATE, LinkType.INPUT_CALC, LinkType.INPUT_WORK)

_LABEL_CHARACTERS = re.compile(r'[A-Za-z0-9_]+')


def node_kind(node_type: str) -> str | None:
    """'data', 'calculation', 'workflow', or None for other node types."""
    for kind, prefix in KIND_PREFIXES.items():
        if node_type.startswith(prefix):
            return kind
    return None


def validate_link_label(link_label: object) -> None:
    """Raise ``TypeError``/``LinkValidationError`` unless the label is made of ``[A-Za-z0-9_]`` without edge ``_``."""
    if not isinstance(link_label, str):
        kind = type(link_label).__name__
        raise TypeError(f'invalid link label `{link_label!r}`: should be string type but is {kind}')
    if link_label.endswith('_') or link_label.startswith('_'):
        raise LinkValidationError(f'invalid link label `{link_label}`: cannot start or end with an underscore')
    if not _LABEL_CHARACTERS.fullmatch(link_label):
        raise LinkValidationError(f'invalid link label `{link_label}`: only alphanumeric and underscores are allowed')


def link_exists_sql(columns: tuple[str, ...]) -> str:
    """``SELECT 1`` if a link of the type given as the first parameter matches ``columns`` (the next parameters)."""
    where = ' AND '.join(f'{column} = ?' for column in columns)  # names from DEGREE_COLUMNS
    return f'SELECT 1 FROM db_dblink WHERE type = ? AND {where} LIMIT 1'


def validate_link_kinds(source_type: str, target_type: str, link_type: LinkType) -> LinkRule:
    """The rule of ``link_type``, checking the node kinds of both ends."""
    rule = LINK_RULES[link_type]
    if node_kind(source_type) != rule.source or node_kind(target_type) != rule.target:
        raise LinkValidationError(
            f'cannot add a {link_type.value} link from a node of type {source_type!r} to one of type '
            f'{target_type!r}: it must go from a {rule.source} node to a {rule.target} node'
        )
    return rule


class TraversalRule(NamedTuple):
    """A graph traversal rule: follow ``link_type`` in ``direction``; its default and whether it may be toggled."""

    link_type: LinkType
    direction: str  # 'forward' (source -> target) or 'backward'
    default: bool
    toggleable: bool


def _rules(table: dict[str, tuple[bool, bool]]) -> dict[str, TraversalRule]:
    rules = {}
    for name, (default, toggleable) in table.items():
        link, _, direction = name.rpartition('_')
        rules[name] = TraversalRule(LinkType(link), direction, default, toggleable)
    return rules


#: aiida's ``GraphTraversalRules.DELETE``: what else must go when a node is deleted.
DELETE_RULES: dict[str, TraversalRule] = _rules(
    {
        'input_calc_forward': (True, False),
        'input_calc_backward': (False, False),
        'create_forward': (True, True),
        'create_backward': (True, False),
        'return_forward': (False, False),
        'return_backward': (True, False),
        'input_work_forward': (True, False),
        'input_work_backward': (False, False),
        'call_calc_forward': (True, True),
        'call_calc_backward': (True, False),
        'call_work_forward': (True, True),
        'call_work_backward': (True, False),
    }
)

#: aiida's ``GraphTraversalRules.EXPORT``: what else goes into an archive with a node.
EXPORT_RULES: dict[str, TraversalRule] = _rules(
    {
        'input_calc_forward': (False, True),
        'input_calc_backward': (True, False),
        'create_forward': (True, False),
        'create_backward': (True, True),
        'return_forward': (True, False),
        'return_backward': (False, True),
        'input_work_forward': (False, True),
        'input_work_backward': (True, False),
        'call_calc_forward': (True, False),
        'call_calc_backward': (True, True),
        'call_work_forward': (True, False),
        'call_work_backward': (True, True),
    }
)
