"""Stdlib-only definitions of the benchmark workloads W1-W7, shared by every side of ``bench/run.py``.

sqlitedos (``sqlitedos_side.py``), the raw sqlite3/disk-objectstore limits (``raw.py``) and aiida-core
(``aiida_side.py``, run in aiida's venv) all take their data shapes, payloads, query dicts and expected answers from
here, so that they run the SAME workloads.

The query dicts are exactly what aiida-core 2.9.4's ``QueryBuilder.as_dict()`` produces for the W4 queries built with
its API; ``root`` is the pk of the W3 chain's first node.
"""

from __future__ import annotations

import copy
import datetime
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

DEFAULT_N = 10_000
DEFAULT_REPS = 3
QUERY_REPEATS = 5  # timed executions per query per run (after one warm-up); the median is kept
FILES_PER_NODE = 10  # W5: N files go into N // FILES_PER_NODE FolderData nodes
PAYLOAD_SIZE = 1024  # W5: bytes per file
DICT_NODE_TYPE = 'data.core.dict.Dict.'
INT_NODE_TYPE = 'data.core.int.Int.'
CALC_NODE_TYPE = 'process.calculation.CalculationNode.'
FOLDER_NODE_TYPE = 'data.core.folder.FolderData.'


def dict_attributes(i: int) -> dict[str, Any]:
    """Attributes of the i-th Dict node of W1 and W2 (W2 repeats the same i = 0..N-1)."""
    return {'i': i, 'name': f'n{i}', 'tags': ['a', 'b'], 'nested': {'x': i % 7}}


def bulk_rows(n: int, user_id: int, now: Any) -> list[dict[str, Any]]:
    """The W2 rows for ``bulk_insert(EntityTypes.NODE, rows)``: every column of ``db_dbnode`` but ``id``."""
    return [
        {
            'uuid': str(uuid.uuid4()),
            'node_type': DICT_NODE_TYPE,
            'process_type': None,
            'label': '',
            'description': '',
            'ctime': now,
            'mtime': now,
            'attributes': dict_attributes(i),
            'extras': {},
            'repository_metadata': {},
            'dbcomputer_id': None,
            'user_id': user_id,
        }
        for i in range(n)
    ]


def payload(kind: str, i: int, size: int = PAYLOAD_SIZE) -> bytes:
    """Deterministic pseudo-random bytes; ``kind`` separates the W5 file sets so they never deduplicate."""
    return random.Random(f'{kind}-{i}').randbytes(size)


def chain_shape(n: int) -> int:
    """Number of calculations in the W3 chain.

    calc_k has inputs (x: output of calc_{k-1} or the root Int for k=0, y: a fresh Int) and one output (result).
    Nodes: 1 root + 3 per calc; links: 2 INPUT_CALC + 1 CREATE per calc. Writes per calc, in this order: store y,
    store calc (with its 2 input links), store output (with its CREATE link), seal calc (attribute update).
    """
    return max(1, n // 10)


def _path(tag: str, entity_type: str, joining_keyword: str | None = None, joining_value: str | None = None) -> dict:
    return {
        'entity_type': entity_type,
        'orm_base': 'node',
        'tag': tag,
        'joining_keyword': joining_keyword,
        'joining_value': joining_value,
        'edge_tag': f'{joining_value}--{tag}' if joining_keyword else None,
        'outerjoin': False,
    }


def _qh(path: list, filters: dict, project: dict, order_by=None, limit=None) -> dict:
    return {
        'path': path,
        'filters': filters,
        'project': project,
        'project_map': {},
        'order_by': order_by or [],
        'limit': limit,
        'offset': None,
        'distinct': False,
    }


def queries(n: int, root: int) -> dict[str, dict]:
    """The W4 queries as {name: {'op': 'count'|'all', 'queryhelp': aiida query dict}}."""
    dict_like = {'node_type': {'like': 'data.core.dict.%'}}
    return {
        'a_count_dict': {
            'op': 'count',
            'queryhelp': _qh([_path('Dict_1', DICT_NODE_TYPE)], {'Dict_1': dict(dict_like)}, {'Dict_1': []}),
        },
        'b_nested_x_eq_3': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('Dict_1', DICT_NODE_TYPE)],
                {'Dict_1': {**dict_like, 'attributes.nested.x': 3}},
                {'Dict_1': [{'id': {}}]},
            ),
        },
        'c_i_gt_half_desc_limit100': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('Dict_1', DICT_NODE_TYPE)],
                {'Dict_1': {**dict_like, 'attributes.i': {'>': n // 2}}},
                {'Dict_1': [{'id': {}}]},
                order_by=[{'Dict_1': [{'id': {'order': 'desc'}}]}],
                limit=100,
            ),
        },
        'd_like_project_name': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('node_1', '')],
                {'node_1': {'node_type': {'like': 'data.core.dict%'}}},
                {'node_1': [{'attributes.name': {}}]},
            ),
        },
        'e1_calc_and_output_of_data': {
            'op': 'all',
            'queryhelp': _qh(
                [
                    _path('d', 'data.Data.'),
                    _path('c', CALC_NODE_TYPE, 'with_incoming', 'd'),
                    _path('Data_1', 'data.Data.', 'with_incoming', 'c'),
                ],
                {
                    'd': {'node_type': {'like': 'data.%'}, 'id': root},
                    'c': {'node_type': {'like': 'process.calculation.%'}},
                    'd--c': {},
                    'Data_1': {'node_type': {'like': 'data.%'}},
                    'c--Data_1': {},
                },
                {'d': [], 'c': [{'id': {}}], 'd--c': [], 'Data_1': [{'id': {}}], 'c--Data_1': []},
            ),
        },
        'e2_all_calc_outputs': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('c', CALC_NODE_TYPE), _path('Data_1', 'data.Data.', 'with_incoming', 'c')],
                {
                    'c': {'node_type': {'like': 'process.calculation.%'}},
                    'Data_1': {'node_type': {'like': 'data.%'}},
                    'c--Data_1': {},
                },
                {'c': [{'id': {}}], 'Data_1': [{'id': {}}], 'c--Data_1': []},
            ),
        },
        'e3_all_calc_inputs': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('c', CALC_NODE_TYPE), _path('Data_1', 'data.Data.', 'with_outgoing', 'c')],
                {
                    'c': {'node_type': {'like': 'process.calculation.%'}},
                    'Data_1': {'node_type': {'like': 'data.%'}},
                    'c--Data_1': {},
                },
                {'c': [{'id': {}}], 'Data_1': [{'id': {}}], 'c--Data_1': []},
            ),
        },
        'f_descendants_of_root': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('r', ''), _path('node_1', '', 'with_ancestors', 'r')],
                {
                    'r': {'node_type': {'like': '%'}, 'id': root},
                    'node_1': {'node_type': {'like': '%'}},
                    'r--node_1': {},
                },
                {'r': [], 'node_1': [{'id': {}}], 'r--node_1': []},
            ),
        },
        'g_project_star_1000': {
            'op': 'all',
            'queryhelp': _qh(
                [_path('Dict_1', DICT_NODE_TYPE)], {'Dict_1': dict(dict_like)}, {'Dict_1': [{'*': {}}]}, limit=1000
            ),
        },
    }


def expected_rows(n: int) -> dict[str, int]:
    """Expected result sizes of the W4 queries on the W1+W2+W3 data (2N Dict nodes, chain of N/10 calcs)."""
    n_calcs = chain_shape(n)
    per_copy_x3 = sum(1 for i in range(n) if i % 7 == 3)
    return {
        'a_count_dict': 2 * n,
        'b_nested_x_eq_3': 2 * per_copy_x3,
        'c_i_gt_half_desc_limit100': min(100, 2 * sum(1 for i in range(n) if i > n // 2)),
        'd_like_project_name': 2 * n,
        'e1_calc_and_output_of_data': 1,
        'e2_all_calc_outputs': n_calcs,
        'e3_all_calc_inputs': 2 * n_calcs,
        'f_descendants_of_root': 2 * n_calcs,
        'g_project_star_1000': min(1000, 2 * n),
    }


def instantiate(query: dict) -> dict:
    """A deep copy of a query dict, safe to hand to a builder that may mutate it."""
    return copy.deepcopy(query)


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def time_repeated(fn: Callable[[], Any], repeats: int = QUERY_REPEATS, warmup: int = 1) -> tuple[float, list, Any]:
    """Median seconds over ``repeats`` timed calls after ``warmup`` untimed ones; also all timings and last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        timings.append(time.perf_counter() - t0)
    return statistics.median(timings), timings, result


def aggregate(records: list[dict]) -> list[dict]:
    """Group run records by (backend, workload, metric); keep the median seconds and derive ops/s.

    Each record: {'backend', 'workload', 'metric', 'n_ops', 'unit', 'seconds', ...extra}. Extra keys of the first
    record of a group are carried over (e.g. rows, archive size).
    """
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec['backend'], rec['workload'], rec['metric']), []).append(rec)
    out = []
    for (backend, workload, metric), recs in groups.items():
        secs = [r['seconds'] for r in recs]
        med = statistics.median(secs)
        first = recs[0]
        row = {k: v for k, v in first.items() if k not in ('seconds',)}
        row.update(
            {
                'backend': backend,
                'workload': workload,
                'metric': metric,
                'seconds': med,
                'ops_per_s': (first['n_ops'] / med) if med > 0 and first.get('n_ops') else None,
                'runs': secs,
            }
        )
        out.append(row)
    return out


def settle_disk() -> None:
    """Write back all dirty pages (``os.sync``), so that what earlier steps wrote is not flushed by the ``fsync``
    calls of the step timed next (loose objects are fsync'd one by one, and on ext4 an fsync also writes out other
    files' pending data)."""
    if hasattr(os, 'sync'):
        os.sync()


def log(msg: str) -> None:
    print(f'[{datetime.datetime.now():%H:%M:%S}] {msg}', file=sys.stderr, flush=True)


class Recorder:
    """Collects one record per measurement: {'backend', 'workload', 'metric', 'n_ops', 'unit', 'seconds', 'n', ...}."""

    def __init__(self, n: int, rep: int = 0, quiet: bool = False) -> None:
        self.n = n
        self.rep = rep
        self.quiet = quiet
        self.records: list[dict] = []

    def add(self, backend: str, workload: str, metric: str, n_ops: int, unit: str, seconds: float, **extra) -> dict:
        rec = {
            'backend': backend,
            'workload': workload,
            'metric': metric,
            'n_ops': n_ops,
            'unit': unit,
            'seconds': seconds,
            'n': self.n,
            'rep': self.rep,
            **extra,
        }
        self.records.append(rec)
        if not self.quiet:
            rate = f' {n_ops / seconds:,.0f} {unit}/s' if seconds > 0 and n_ops and unit != 'queries' else ''
            log(f'{backend} {workload} {metric}: {seconds:.4f} s{rate}')
        return rec
