"""Query dicts in the exact shape of aiida's ``QueryBuilder.as_dict()``, for tests that write them by hand."""

from __future__ import annotations

from typing import Any


def node_query(filters: dict | None = None, project: list | None = None, **extra: Any) -> dict[str, Any]:
    """One node vertex tagged ``n`` with ``filters``, projecting ``project`` (``['id']`` by default); ``extra``
    replaces top-level keys (``limit``, ``order_by``, ...)."""
    data = {
        'path': [
            {
                'entity_type': '',
                'orm_base': 'node',
                'tag': 'n',
                'joining_keyword': None,
                'joining_value': None,
                'edge_tag': None,
                'outerjoin': False,
            }
        ],
        'filters': {'n': filters or {}},
        'project': {'n': project if project is not None else ['id']},
        'project_map': {},
        'order_by': [],
        'limit': None,
        'offset': None,
        'distinct': False,
    }
    data.update(extra)
    return data
