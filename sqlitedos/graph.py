"""Provenance-graph traversal with aiida's rule sets, and deleting nodes with everything that depends on them.

``traverse`` is the shared machinery: deletion uses ``DELETE_RULES``, archive export ``EXPORT_RULES``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sqlitedos.db import encode_json, translate_errors
from sqlitedos.links import DELETE_RULES, EXPORT_RULES, LinkType, TraversalRule

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('DELETE_RULES', 'EXPORT_RULES', 'delete_nodes', 'resolve_rules', 'traverse')

# One recursive query: from the start set, follow the enabled link types forward (input -> output) and backward.
# UNION (not UNION ALL) drops rows already reached, so the recursion ends on cyclic or diamond-shaped graphs.
# https://www.sqlite.org/lang_with.html#recursive_query_examples (several recursive SELECTs need SQLite >= 3.34)
# ``OR reached.id IS NULL`` never holds; it keeps SQLite from building a bloom filter over the whole link table
# before the first step (64 ms at 1M links for any start set; see sqlitedos/query/joins.py, recursive_cte_sql).
TRAVERSE = """
WITH RECURSIVE reached(id) AS (
    SELECT id FROM db_dbnode WHERE id IN (SELECT value FROM json_each(:start))
    UNION
    SELECT link.output_id FROM db_dblink AS link JOIN reached ON link.input_id = reached.id
    WHERE (link.type IN (SELECT value FROM json_each(:forward)) OR reached.id IS NULL)
    UNION
    SELECT link.input_id FROM db_dblink AS link JOIN reached ON link.output_id = reached.id
    WHERE (link.type IN (SELECT value FROM json_each(:backward)) OR reached.id IS NULL)
)
SELECT id FROM reached
"""


def resolve_rules(rules: Mapping[str, TraversalRule], **toggles: bool) -> dict[str, frozenset[LinkType]]:
    """The link types to follow per direction (``'forward'``, ``'backward'``), after applying ``toggles``.

    ``ValueError`` for an unknown rule name, or for setting a rule that cannot be toggled to a non-default value.
    """
    enabled: dict[str, set[LinkType]] = {'forward': set(), 'backward': set()}
    for name in toggles:
        if name not in rules:
            raise ValueError(f'unknown traversal rule {name!r}; expected one of: {sorted(rules)}')
    for name, rule in rules.items():
        value = toggles.get(name, rule.default)
        if not isinstance(value, bool):
            raise TypeError(f'traversal rule {name!r} must be a bool, got {value!r}')
        if value != rule.default and not rule.toggleable:
            raise ValueError(f'traversal rule {name!r} cannot be toggled: it is always {rule.default}')
        if value:
            enabled[rule.direction].add(rule.link_type)
    return {direction: frozenset(types) for direction, types in enabled.items()}


def traverse(
    storage: StorageBackend, pks: Iterable[int], rules: Mapping[str, TraversalRule] = DELETE_RULES, **toggles: bool
) -> set[int]:
    """The start nodes (those that exist) plus every node reached from them along the enabled link directions."""
    directions = resolve_rules(rules, **toggles)
    params = {
        'start': encode_json(sorted({int(pk) for pk in pks})),
        'forward': encode_json(sorted(link_type.value for link_type in directions['forward'])),
        'backward': encode_json(sorted(link_type.value for link_type in directions['backward'])),
    }
    with translate_errors():
        return {pk for (pk,) in storage.get_session().execute(TRAVERSE, params)}


def delete_nodes(
    storage: StorageBackend, pks: Iterable[int], dry_run: bool = True, **traversal_rules: bool
) -> set[int]:
    """Delete nodes and everything that must go with them (aiida's DELETE rules); returns the pks (to be) deleted.

    With ``dry_run`` (the default) nothing is deleted. Pks that do not exist are ignored. Repository files stay
    until the storage's ``maintain`` removes unreferenced objects.
    """
    if dry_run:
        return traverse(storage, pks, DELETE_RULES, **traversal_rules)
    with storage.transaction():
        to_delete = traverse(storage, pks, DELETE_RULES, **traversal_rules)
        if to_delete:
            storage.delete_nodes_and_connections(sorted(to_delete))
    return to_delete
