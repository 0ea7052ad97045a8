"""``make bench-scale``: sqlitedos at a million nodes, side by side with the raw floor measured in the same run.

One storage is built once (N nodes, L links, F files of 1 KiB; default 1,000,000 / 1,000,000 / 100,000), then every
step runs in a **fresh Python process** that reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``; a child
forked from a large parent would inherit the parent's peak). The parent only starts children and prints the table,
next to the 10k figures of ``make bench`` (``bench/results.json``). Query times and ratios come from one more child
that runs both sides' batches interleaved (``queries-paired``, ``ladder-paired``; the faster of ``--rounds``):
separate processes minutes apart drift 30-100% apart on a shared machine.

Shape (node ids in this order, one fresh database): ``n_dicts`` Dicts (``workloads.dict_attributes(i)``, distinct
ctimes 1 us apart), a root Int, a chain of K = (L - 280) / 3 calculations (calc_k: inputs x = the previous output,
y = Dict k mod n_dicts; one Int output), F / 10 FolderData nodes with 10 files each, a 40-step diamond ladder (d_s
feeds calcs a_s and b_s, their outputs feed calc m_s, which creates d_s+1) and one group holding min(100k,
n_dicts / 3) Dicts. Every answer is checked against natural SQL on the same database.

    .venv/bin/python bench/scale.py                  # the full 1M run
    .venv/bin/python bench/scale.py --n 100000       # links = N, files = N / 10
    .venv/bin/python bench/scale.py --n 100000 --update-readme
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import raw
import report
import workloads as wl

BENCH = Path(__file__).resolve().parent
README = BENCH / 'README.md'
RESULTS_10K = BENCH / 'results.json'
RESULTS = BENCH / 'scale-results.json'
START, END = '<!-- scale:start -->', '<!-- scale:end -->'
DEFAULT_N, DEFAULT_FILES = 1_000_000, 100_000
LADDER_STEPS = 40
LADDER_PROBES = (10, 14, 18, LADDER_STEPS)  # descendants of d_(40-s): a ladder of s diamonds
LADDER_TIMEOUT = 90.0  # seconds for all ladder probes (UNION ALL enumerates 2^s paths)
BATCH = 50_000  # rows per bulk_insert / executemany call, on both sides
REPEATS = 5  # timed batches per query after one warm-up (the machine is noisy: single figures vary by 30%+)
FOLDER_FILES = wl.FILES_PER_NODE
LADDER_NODES, LADDER_LINKS = 1 + 6 * LADDER_STEPS, 7 * LADDER_STEPS
GROUP_LABEL = 'scale-members'
VERIFY_TWO_THREADS = 'verify [floor on 2 threads]'
STAMP0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
INT_TYPE, CALC_TYPE, DICT_TYPE, FOLDER_TYPE = (
    wl.INT_NODE_TYPE,
    wl.CALC_NODE_TYPE,
    wl.DICT_NODE_TYPE,
    wl.FOLDER_NODE_TYPE,
)


# ------------------------------------------------------------------------------------------------------------ shape


def shape_of(n: int, links: int, files: int) -> dict[str, int]:
    """Counts and id ranges of every part of the graph (ids are assigned in insertion order from 1)."""
    calcs = (links - LADDER_LINKS) // 3
    folders = files // FOLDER_FILES
    n_dicts = n - 1 - 2 * calcs - folders - LADDER_NODES
    if calcs < 1 or n_dicts < 30:
        raise SystemExit(f'--n {n} is too small for {links} links and {files} files')
    root = n_dicts + 1
    first_folder = root + 2 * calcs + 1
    ladder = first_folder + folders
    return {
        'n': n,
        'links': 3 * calcs + LADDER_LINKS,
        'files': folders * FOLDER_FILES,
        'n_dicts': n_dicts,
        'calcs': calcs,
        'root': root,
        'last_output': root + 2 * calcs,
        'first_folder': first_folder,
        'folders': folders,
        'ladder': ladder,
        'group_size': min(100_000, n_dicts // 3),
        'delete': min(n // 10, n_dicts // 3),
    }


def ladder_node(shape: dict[str, int], step: int) -> int:
    """The id of d_step, the data node at the top of diamond ``step`` (d_40 is the bottom)."""
    return shape['ladder'] + 6 * step


def stamp(i: int) -> datetime.datetime:
    return STAMP0 + datetime.timedelta(microseconds=i)


def node(i: int, node_type: str, attributes: dict, metadata: dict | None = None) -> dict[str, Any]:
    """The bulk_insert row of node number i (ctime/mtime distinct per node)."""
    return {
        'uuid': str(uuid.UUID(int=i + 1)),
        'node_type': node_type,
        'process_type': None,
        'label': '',
        'description': '',
        'ctime': stamp(i),
        'mtime': stamp(i),
        'attributes': attributes,
        'extras': {},
        'repository_metadata': metadata or {},
        'dbcomputer_id': None,
        'user_id': 1,
    }


def file_keys(shape: dict[str, int]) -> list[str]:
    import hashlib

    return [hashlib.sha256(wl.payload('scale', i)).hexdigest() for i in range(shape['files'])]


def iter_nodes(shape: dict[str, int], keys: list[str]):
    """Every node row, in id order."""
    for i in range(shape['n_dicts']):
        yield node(i, DICT_TYPE, wl.dict_attributes(i))
    i = shape['n_dicts']
    yield node(i, INT_TYPE, {'value': 0})
    for k in range(shape['calcs']):
        yield node(i + 1 + 2 * k, CALC_TYPE, {'sealed': True})
        yield node(i + 2 + 2 * k, INT_TYPE, {'value': k + 1})
    i = shape['first_folder'] - 1
    for f in range(shape['folders']):
        names = keys[f * FOLDER_FILES : (f + 1) * FOLDER_FILES]
        yield node(i + f, FOLDER_TYPE, {}, {'o': {f'f{j}.bin': {'k': key} for j, key in enumerate(names)}})
    i = shape['ladder'] - 1
    yield node(i, INT_TYPE, {'value': 0})
    for s in range(LADDER_STEPS):
        for j, node_type in enumerate((CALC_TYPE, CALC_TYPE, INT_TYPE, INT_TYPE, CALC_TYPE, INT_TYPE)):
            yield node(i + 1 + 6 * s + j, node_type, {'sealed': True} if node_type == CALC_TYPE else {'value': s})


def iter_links(shape: dict[str, int]):
    """Every link as (input_id, output_id, label, type)."""
    prev = shape['root']
    for k in range(shape['calcs']):
        calc = shape['root'] + 1 + 2 * k
        yield prev, calc, 'x', 'input_calc'
        yield 1 + k % shape['n_dicts'], calc, 'y', 'input_calc'
        yield calc, calc + 1, 'result', 'create'
        prev = calc + 1
    for s in range(LADDER_STEPS):
        d = ladder_node(shape, s)
        a, b, oa, ob, m, out = range(d + 1, d + 7)
        yield from ((d, a, 'x', 'input_calc'), (d, b, 'x', 'input_calc'), (a, oa, 'result', 'create'))
        yield from ((b, ob, 'result', 'create'), (oa, m, 'left', 'input_calc'), (ob, m, 'right', 'input_calc'))
        yield m, out, 'result', 'create'


def batches(iterable, size: int = BATCH):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------------------ the children


class Child:
    """What one step process records: {'side', 'metric', 'seconds', ...} per measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir)
        self.shape = shape_of(args.n, args.links, args.files)
        self.records: list[dict] = []

    @property
    def folder(self) -> Path:
        return self.workdir / 'dos'

    def add(self, side: str, metric: str, seconds: float | None, **extra: Any) -> None:
        self.records.append({'side': side, 'metric': metric, 'seconds': seconds, **extra})
        wl.log(f'{side} {metric}: {"-" if seconds is None else f"{seconds:.4f} s"}')
        print(json.dumps({'record': self.records[-1]}), flush=True)

    def storage(self) -> Any:
        from sqlitedos import SqliteDosStorage

        profile = SqliteDosStorage.create_profile('scale', filepath=self.folder, default_user_email='bench@scale')
        if not self.folder.exists():
            SqliteDosStorage.initialise(profile)
        return SqliteDosStorage(profile)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def step_build_dos(child: Child) -> None:
    """bulk_insert every node, link and membership (BATCH rows a call); files into the container, packed."""
    from sqlitedos import EntityTypes

    shape = child.shape
    storage = child.storage()
    keys = file_keys(shape)
    t0 = time.perf_counter()
    for rows in batches(iter_nodes(shape, keys)):
        storage.bulk_insert(EntityTypes.NODE, rows)
    link_rows = ({'input_id': i, 'output_id': o, 'label': label, 'type': t} for i, o, label, t in iter_links(shape))
    for rows in batches(link_rows):
        storage.bulk_insert(EntityTypes.LINK, rows)
    child.add('dos', 'bulk_insert(nodes + links)', time.perf_counter() - t0, n_ops=shape['n'] + shape['links'])
    (group,) = storage.bulk_insert(
        EntityTypes.GROUP,
        [
            {
                'uuid': str(uuid.uuid4()),
                'label': GROUP_LABEL,
                'type_string': 'core',
                'time': STAMP0,
                'description': '',
                'extras': {},
                'user_id': 1,
            }
        ],
    )
    members = ({'dbgroup_id': group, 'dbnode_id': pk} for pk in range(1, shape['group_size'] + 1))
    for rows in batches(members):
        storage.bulk_insert(EntityTypes.GROUP_NODE, rows)
    container = storage.get_container()
    try:
        for chunk in batches(range(shape['files']), 10_000):
            container.add_objects_to_pack([wl.payload('scale', i) for i in chunk])
    finally:
        container.close()
    storage.close()
    connection = sqlite3.connect(child.folder / 'database.sqlite')
    counts = connection.execute('SELECT (SELECT count(*) FROM db_dbnode), (SELECT count(*) FROM db_dblink)').fetchone()
    connection.close()
    check(counts == (shape['n'], shape['links']), f'build: {counts}, expected {(shape["n"], shape["links"])}')


def raw_node_tuple(row: dict[str, Any]) -> tuple:
    ts = row['ctime'].isoformat(' ', 'microseconds')[:26]
    return (
        row['uuid'],
        row['node_type'],
        None,
        '',
        '',
        ts,
        ts,
        json.dumps(row['attributes']),
        '{}',
        json.dumps(row['repository_metadata']),
        None,
        1,
    )


def step_build_raw(child: Child) -> None:
    """The same rows with executemany (JSON and timestamps encoded in the timed part), BATCH rows a call."""
    shape = child.shape
    keys = file_keys(shape)
    conn = raw.new_db('wal', child.workdir, 'raw-bulk')
    t0 = time.perf_counter()
    for rows in batches(iter_nodes(shape, keys)):
        conn.execute('BEGIN')
        conn.executemany(raw.INSERT_NODE, [raw_node_tuple(row) for row in rows])
        conn.execute('COMMIT')
    for rows in batches(iter_links(shape)):
        conn.execute('BEGIN')
        conn.executemany(raw.INSERT_LINK, rows)
        conn.execute('COMMIT')
    child.add('raw', 'bulk_insert(nodes + links)', time.perf_counter() - t0, n_ops=shape['n'] + shape['links'])
    check(conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0] == shape['n'], 'raw build: node count')
    conn.close()
    remove_database(child.workdir / 'raw-bulk.sqlite')


# ----------------------------------------------------------------------------------------------------------- queries

PROVENANCE = "('create', 'input_calc')"
DESCENDANTS_SQL = (
    f'WITH RECURSIVE d(id) AS (SELECT output_id FROM db_dblink WHERE input_id = ? AND type IN {PROVENANCE} '
    f'UNION SELECT l.output_id FROM db_dblink l JOIN d ON l.input_id = d.id WHERE l.type IN {PROVENANCE}) '
    'SELECT id FROM d'
)
ANCESTORS_SQL = (
    f'WITH RECURSIVE a(id) AS (SELECT input_id FROM db_dblink WHERE output_id = ? AND type IN {PROVENANCE} '
    f'UNION SELECT l.input_id FROM db_dblink l JOIN a ON l.output_id = a.id WHERE l.type IN {PROVENANCE}) '
    'SELECT id FROM a'
)
GROUP_SQL = (
    'SELECT n.id FROM db_dbgroup g JOIN db_dbgroup_dbnodes m ON m.dbgroup_id = g.id '
    'JOIN db_dbnode n ON n.id = m.dbnode_id WHERE g.label = ?'
)


def extra_queries(shape: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Item 2's orderings, pages and membership, and the chain traversal: builder calls + natural SQL.

    ``build(QueryBuilder, storage)`` makes the query; ``compare``: 'ordered' rows, 'set' of nodes (traversals: aiida
    returns one row per path), or sorted rows.
    """
    dict_like = {'node_type': {'like': 'data.core.dict.%'}}
    every = {'node_type': {'like': '%'}}  # what aiida's base Node class adds
    half = shape['n'] // 2
    last = shape['last_output']

    def order(tag: str, field: str, direction: str) -> list:
        return [{tag: [{field: {'order': direction}}]}]

    return {
        'o1_newest_100_dicts': {
            'dict': wl._qh(
                [wl._path('Dict_1', DICT_TYPE)],
                {'Dict_1': dict(dict_like)},
                {'Dict_1': [{'id': {}}]},
                order_by=order('Dict_1', 'ctime', 'desc'),
                limit=100,
            ),
            'sql': "SELECT id FROM db_dbnode WHERE node_type LIKE 'data.core.dict.%' ORDER BY ctime DESC LIMIT 100",
            'params': (),
            'compare': 'ordered',
            'rows': 100,
        },
        'o2_newest_100_nodes': {
            'dict': wl._qh(
                [wl._path('node_1', '')],
                {'node_1': dict(every)},
                {'node_1': [{'id': {}}]},
                order_by=order('node_1', 'ctime', 'desc'),
                limit=100,
            ),
            'sql': 'SELECT id FROM db_dbnode ORDER BY ctime DESC LIMIT 100',
            'params': (),
            'compare': 'ordered',
            'rows': 100,
        },
        'p1_offset_page_half_way': {
            'dict': {
                **wl._qh(
                    [wl._path('node_1', '')],
                    {'node_1': dict(every)},
                    {'node_1': [{'id': {}}]},
                    order_by=order('node_1', 'id', 'asc'),
                    limit=100,
                ),
                'offset': half,
            },
            'sql': 'SELECT id FROM db_dbnode ORDER BY id LIMIT 100 OFFSET ?',
            'params': (half,),
            'compare': 'ordered',
            'rows': 100,
        },
        'q_with_group_members': {
            'build': lambda QB, s: (
                QB(s)
                .append(entity_type='group.core', tag='g', filters={'label': GROUP_LABEL})
                .append(entity_type='', with_group='g', project='id')
            ),
            'sql': GROUP_SQL,
            'params': (GROUP_LABEL,),
            'compare': 'sorted',
            'rows': shape['group_size'],
        },
        't_chain_ancestors_of_last': {
            'build': lambda QB, s: (
                QB(s)
                .append(entity_type='', tag='r', filters={'id': last})
                .append(entity_type='', with_descendants='r', project='id')
            ),
            'sql': ANCESTORS_SQL,
            'params': (last,),
            'compare': 'set',
            'rows': None,
        },
    }


def ladder_queries(shape: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Descendants of d_(40-s) for each probe s: 6 s nodes, 2^s paths."""
    out = {}
    for steps in LADDER_PROBES:
        top = ladder_node(shape, LADDER_STEPS - steps)
        out[f'ladder_descendants_{steps}_steps'] = {
            'build': lambda QB, s, top=top: (
                QB(s)
                .append(entity_type='', tag='r', filters={'id': top})
                .append(entity_type='', with_ancestors='r', project='id')
            ),
            'sql': DESCENDANTS_SQL,
            'params': (top,),
            'compare': 'set',
            'rows': 6 * steps,
        }
    return out


def w4_queries(shape: dict[str, int]) -> dict[str, dict[str, Any]]:
    """W4 a-g of ``make bench`` (aiida's query dicts) on the Dicts and the chain of this shape."""
    n_dicts, root = shape['n_dicts'], shape['root']
    natural = raw.raw_queries(n_dicts, root)
    expected = {
        'a_count_dict': n_dicts,
        'b_nested_x_eq_3': sum(1 for i in range(n_dicts) if i % 7 == 3),
        'c_i_gt_half_desc_limit100': min(100, n_dicts - 1 - n_dicts // 2),
        'd_like_project_name': n_dicts,
        'e1_calc_and_output_of_data': 1,
        'e2_all_calc_outputs': shape['calcs'] + 3 * LADDER_STEPS,  # the ladder's calcs have 1 output each
        'e3_all_calc_inputs': 2 * shape['calcs'] + 4 * LADDER_STEPS,  # ... and 1, 1 and 2 inputs
        'f_descendants_of_root': 2 * shape['calcs'],
        'g_project_star_1000': min(1000, n_dicts),
    }
    out = {}
    for name, spec in wl.queries(n_dicts, root).items():
        sql, params, how = natural[name]
        compare = {'a_count_dict': 'count', 'c_i_gt_half_desc_limit100': 'ordered', 'g_project_star_1000': 'len'}
        out[name] = {
            'dict': spec['queryhelp'],
            'op': spec['op'],
            'sql': sql,
            'params': params,
            'how': how,
            'compare': compare.get(name, 'sorted'),
            'rows': expected[name],
        }
    return out


def normalise(compare: str, rows: Any) -> Any:
    if compare == 'count':
        return rows
    if compare == 'len':
        return len(rows)
    rows = [tuple(row) if isinstance(row, (list, tuple)) else (row,) for row in rows]
    if compare == 'ordered':
        return rows
    if compare == 'set':
        return sorted(set(rows))
    return sorted(rows)


def run_dos_query(QB: Any, storage: Any, spec: dict[str, Any], query_dict: dict | None = None) -> Any:
    if 'build' in spec:
        return spec['build'](QB, storage).all()
    qb = QB.from_dict(storage, query_dict if query_dict is not None else wl.instantiate(spec['dict']))
    return qb.count() if spec.get('op') == 'count' else qb.all()


def run_sql(conn: sqlite3.Connection, spec: dict[str, Any], sql: str | None = None) -> Any:
    rows = raw.run_raw_query(conn, sql or spec['sql'], spec['params'], spec.get('how', 'rows'))
    return rows[0] if spec.get('how') == 'scalar' else rows


def timed(call: Any, prepare: Any = None) -> tuple[float, Any]:
    """Median seconds per call over REPEATS batches after a warm-up; a batch repeats a fast call (up to 1000 times,
    about 20 ms a batch) so that microsecond queries are timed above the clock's noise. ``prepare(k)`` makes what k
    calls consume (fresh query dicts), before the clock; ``call`` then takes one of them."""
    args = prepare(1) if prepare else [None]
    t0 = time.perf_counter()
    result = call(args[0])
    inner = max(1, min(1000, int(0.02 / max(time.perf_counter() - t0, 1e-7))))
    per_call = []
    for _ in range(REPEATS):
        args = prepare(inner) if prepare else [None] * inner
        t0 = time.perf_counter()
        for arg in args:
            result = call(arg)
        per_call.append((time.perf_counter() - t0) / inner)
    return sorted(per_call)[len(per_call) // 2], result


#: Queries also timed through a prepared statement (``storage.query().prepare(dict)`` / ``qb.prepare()`` once, then
#: ``.all()``): the repeated-lookup path, next to the same raw figure; for queries this fast the builder's fixed
#: cost per call (parsing the dict, ~15-30 us) is most of the time.
PREPARED = {
    'c_i_gt_half_desc_limit100',
    'e1_calc_and_output_of_data',
    'g_project_star_1000',
    'o1_newest_100_dicts',
    'o2_newest_100_nodes',
    'p1_offset_page_half_way',
    *(f'ladder_descendants_{steps}_steps' for steps in LADDER_PROBES),
}


def prepared_query(QB: Any, storage: Any, spec: dict[str, Any]) -> Any:
    if 'build' in spec:
        return spec['build'](QB, storage).prepare()
    return storage.query().prepare(wl.instantiate(spec['dict']))


def query_steps(child: Child, specs: dict[str, dict[str, Any]], side: str) -> None:
    """Time each query (``timed``); check each answer against natural SQL on the same database."""
    from sqlitedos import QueryBuilder

    storage = child.storage() if side == 'dos' else None
    conn = sqlite3.connect(f'{(child.folder / "database.sqlite").as_uri()}?mode=ro', uri=True)
    conn.execute('PRAGMA case_sensitive_like = ON')
    try:
        for name, spec in specs.items():
            if side == 'dos':
                copies = (
                    None if 'build' in spec else (lambda k, spec=spec: [wl.instantiate(spec['dict']) for _ in range(k)])
                )
                med, result = timed(lambda d, spec=spec: run_dos_query(QueryBuilder, storage, spec, d), copies)
                got = normalise(spec['compare'], result)
                reference = normalise(spec['compare'], run_sql(conn, spec))
                check(got == reference, f'{name}: sqlitedos rows differ from natural SQL on the same database')
                count = got if spec['compare'] == 'count' else len(result) if spec['compare'] != 'len' else got
                distinct = len(got) if spec['compare'] == 'set' else None
                child.add('dos', name, med, rows=count, distinct=distinct)
                if name in PREPARED:
                    prepared = prepared_query(QueryBuilder, storage, spec)
                    run = prepared.count if spec.get('op') == 'count' else prepared.all
                    med, result = timed(lambda _: run())
                    check(normalise(spec['compare'], result) == reference, f'{name} [prepared]: rows differ')
                    child.add('dos', f'{name} [prepared]', med, rows=count, distinct=distinct)
            else:
                best = None
                for variant in sql_variants(spec['sql']):
                    med, result = timed(lambda _, v=variant: run_sql(conn, spec, v))
                    if best is None or med < best:
                        best = med
                got = normalise(spec['compare'], result)
                if spec['rows'] is not None:
                    size = got if spec['compare'] in ('count', 'len') else len(got)
                    check(size == spec['rows'], f'{name}: natural SQL gave {size} rows, expected {spec["rows"]}')
                rows = got if spec['compare'] in ('count', 'len') else len(got)
                child.add('raw', name, best, rows=rows)
                if name in PREPARED:
                    child.add('raw', f'{name} [prepared]', best, rows=rows)
    finally:
        conn.close()
        if storage is not None:
            storage.close()


def timed_together(calls: list[tuple[Any, Any]]) -> list[tuple[float, Any]]:
    """``timed`` for several calls at once, their batches interleaved (a, b, c, a, b, c, ...): whatever else the
    machine does then slows each about as much, so their ratios hold where separate runs' figures vary by 30%+."""
    inners, results = [], []
    for call, prepare in calls:
        args = prepare(1) if prepare else [None]
        t0 = time.perf_counter()
        results.append(call(args[0]))
        inners.append(max(1, min(1000, int(0.02 / max(time.perf_counter() - t0, 1e-7)))))
    per_call: list[list[float]] = [[] for _ in calls]
    for _ in range(REPEATS):
        for index, ((call, prepare), inner) in enumerate(zip(calls, inners)):
            args = prepare(inner) if prepare else [None] * inner
            t0 = time.perf_counter()
            for arg in args:
                results[index] = call(arg)
            per_call[index].append((time.perf_counter() - t0) / inner)
    return [(sorted(times)[len(times) // 2], result) for times, result in zip(per_call, results)]


def paired_query_steps(child: Child, specs: dict[str, dict[str, Any]]) -> None:
    """The timings of ``query_steps`` for both sides in one process, interleaved per query (``timed_together``); the
    table takes its ratios from these and its peak RSS from the separate runs of each side."""
    from sqlitedos import QueryBuilder

    storage = child.storage()
    conn = sqlite3.connect(f'{(child.folder / "database.sqlite").as_uri()}?mode=ro', uri=True)
    conn.execute('PRAGMA case_sensitive_like = ON')
    try:
        for name, spec in specs.items():
            copies = (
                None if 'build' in spec else (lambda k, spec=spec: [wl.instantiate(spec['dict']) for _ in range(k)])
            )
            calls = [(lambda d, spec=spec: run_dos_query(QueryBuilder, storage, spec, d), copies)]
            if name in PREPARED:
                prepared = prepared_query(QueryBuilder, storage, spec)
                run = prepared.count if spec.get('op') == 'count' else prepared.all
                calls.append((lambda _, run=run: run(), None))
            variants = sql_variants(spec['sql'])
            calls += [(lambda _, v=variant, spec=spec: run_sql(conn, spec, v), None) for variant in variants]
            timings = timed_together(calls)
            reference = normalise(spec['compare'], timings[-1][1])
            for med, result in timings:
                check(normalise(spec['compare'], result) == reference, f'{name}: the answers differ (paired)')
            raw_best = min(med for med, _ in timings[-len(variants) :])
            child.add('dos', name, timings[0][0], paired=True)
            child.add('raw', name, raw_best, paired=True)
            if name in PREPARED:
                child.add('dos', f'{name} [prepared]', timings[1][0], paired=True)
                child.add('raw', f'{name} [prepared]', raw_best, paired=True)
    finally:
        conn.close()
        storage.close()


def sql_variants(sql: str) -> list[str]:
    """The SQL and its hand-tuned forms, raw's ``[best]`` of all: where it filters on node_type, the same with that
    index disabled; where it recurses over links, the same with the bloom filter over the link table ruled out."""
    variants = [sql]
    if 'node_type LIKE' in sql:
        variants.append(raw.without_node_type_index(sql))
    if 'WITH RECURSIVE' in sql:
        variants.append(raw.without_bloom_filter(sql))
        assert variants[-1] != sql, sql
    return variants


def step_queries(child: Child, side: str) -> None:
    query_steps(child, {**w4_queries(child.shape), **extra_queries(child.shape)}, side)


def step_ladder(child: Child, side: str) -> None:
    query_steps(child, ladder_queries(child.shape), side)


def step_queries_paired(child: Child) -> None:
    paired_query_steps(child, {**w4_queries(child.shape), **extra_queries(child.shape)})


def step_ladder_paired(child: Child) -> None:
    paired_query_steps(child, ladder_queries(child.shape))


# ----------------------------------------------------------------------------------------------- verify, backup, ...


def step_verify_dos(child: Child) -> None:
    import disk_objectstore  # noqa: F401 - imported before the clock, as in the floor (~0.3 s, whatever N)

    from sqlitedos.verify import verify

    t0 = time.perf_counter()
    result = verify(child.folder)
    seconds = time.perf_counter() - t0
    check(result.ok, f'verify found problems: {result.render()[:2000]}')
    check(result.counts['referenced objects'] == child.shape['files'], f'verify counts: {result.counts}')
    child.add('dos', 'verify', seconds, n_ops=child.shape['n'])
    child.add('dos', VERIFY_TWO_THREADS, seconds, n_ops=child.shape['n'])  # the same run, against the other floor


def floor_pragmas(folder: Path) -> None:
    """The floor's database part: ``integrity_check`` + ``foreign_key_check`` on a plain read-only connection."""
    conn = sqlite3.connect(f'{(folder / "database.sqlite").as_uri()}?mode=ro', uri=True)
    try:
        check(conn.execute('PRAGMA integrity_check').fetchall() == [('ok',)], 'integrity_check')
        check(conn.execute('PRAGMA foreign_key_check').fetchall() == [], 'foreign_key_check')
    finally:
        conn.close()


def floor_hash_objects(folder: Path) -> int:
    """The floor's container part: sha256 of every object, read in one ``get_objects_stream_and_meta``."""
    import hashlib

    from disk_objectstore import Container

    container = Container(str(folder / 'container'))
    hashed = 0
    with container.get_objects_stream_and_meta(list(container.list_all_objects())) as triplets:
        for key, stream, _ in triplets:
            check(hashlib.sha256(stream.read()).hexdigest() == key, f'object {key}')
            hashed += 1
    container.close()
    return hashed


def step_verify_raw(child: Child) -> None:
    """The floor: integrity_check + foreign_key_check, and hashing every object of the container in one call."""
    import disk_objectstore  # noqa: F401 - imported before the clock, as on the sqlitedos side

    t0 = time.perf_counter()
    floor_pragmas(child.folder)
    hashed = floor_hash_objects(child.folder)
    child.add('raw', 'verify', time.perf_counter() - t0, n_ops=child.shape['n'], objects=hashed)


def step_verify_raw_threads(child: Child) -> None:
    """The same floor using both cores, as sqlitedos does: the two pragmas in a thread, hashing meanwhile."""
    import threading

    import disk_objectstore  # noqa: F401 - imported before the clock, as on the sqlitedos side

    failures: list[BaseException] = []

    def pragmas() -> None:
        try:
            floor_pragmas(child.folder)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, on the main thread
            failures.append(exc)

    t0 = time.perf_counter()
    thread = threading.Thread(target=pragmas)
    thread.start()
    hashed = floor_hash_objects(child.folder)
    thread.join()
    seconds = time.perf_counter() - t0
    if failures:
        raise failures[0]
    child.add('raw', VERIFY_TWO_THREADS, seconds, n_ops=child.shape['n'], objects=hashed)


def step_backup_dos(child: Child) -> None:
    from sqlitedos.backup import backup

    dest = child.workdir / 'backup-dos'
    shutil.rmtree(dest, ignore_errors=True)
    storage = child.storage()
    t0 = time.perf_counter()
    backup(storage, dest)
    seconds = time.perf_counter() - t0
    storage.close()
    child.add('dos', 'backup', seconds, n_ops=child.shape['n'])
    shutil.rmtree(dest, ignore_errors=True)


def step_backup_raw(child: Child) -> None:
    """The floor: sqlite3's online backup of the database, then a copy of the container's files."""
    dest = child.workdir / 'backup-raw'
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    t0 = time.perf_counter()
    source = sqlite3.connect(child.folder / 'database.sqlite')
    target = sqlite3.connect(dest / 'database.sqlite')
    source.backup(target)
    target.close()
    source.close()
    shutil.copytree(child.folder / 'container', dest / 'container')
    child.add('raw', 'backup', time.perf_counter() - t0, n_ops=child.shape['n'])
    shutil.rmtree(dest, ignore_errors=True)


def step_maintain_dos(child: Child) -> None:
    storage = child.storage()
    t0 = time.perf_counter()
    storage.maintain(full=True)
    seconds = time.perf_counter() - t0
    storage.close()
    child.add('dos', 'maintain(full)', seconds, n_ops=child.shape['files'])


def step_maintain_raw(child: Child) -> None:
    """The floor on copies (made before the clock starts) of what ``maintain(full=True)`` does: pack, repack and
    vacuum the container, then VACUUM the database (finding unreferenced objects is left out of the floor)."""
    from disk_objectstore import Container

    copy = child.workdir / 'container-copy'
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(child.folder / 'container', copy)
    database = child.workdir / 'maintain-copy.sqlite'
    copy_database(child.folder / 'database.sqlite', database)
    container = Container(str(copy))
    t0 = time.perf_counter()
    container.pack_all_loose(clean_loose_per_pack=True)
    container.repack()
    container.clean_storage(vacuum=True)
    conn = raw.connect('wal', database)
    conn.execute('VACUUM')
    conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    child.add('raw', 'maintain(full)', time.perf_counter() - t0, n_ops=child.shape['files'])
    conn.close()
    container.close()
    shutil.rmtree(copy, ignore_errors=True)
    remove_database(database)


def copy_database(source: Path, target: Path) -> None:
    """A copy through sqlite3's online backup (untimed preparation of a step that changes the database)."""
    remove_database(target)
    source_conn, target_conn = sqlite3.connect(source), sqlite3.connect(target)
    source_conn.backup(target_conn)
    target_conn.close()
    source_conn.close()


def remove_database(path: Path) -> None:
    for suffix in ('', '-wal', '-shm', '-journal'):
        Path(f'{path}{suffix}').unlink(missing_ok=True)


def step_archive_create_dos(child: Child) -> None:
    from sqlitedos.archive import create_archive

    path = child.workdir / 'export.aiida'
    path.unlink(missing_ok=True)
    storage = child.storage()
    t0 = time.perf_counter()
    create_archive(storage, path)
    seconds = time.perf_counter() - t0
    storage.close()
    child.add('dos', 'archive_create', seconds, n_ops=child.shape['n'], archive_bytes=path.stat().st_size)


def step_archive_import_dos(child: Child) -> None:
    from sqlitedos import SqliteDosStorage
    from sqlitedos.archive import import_archive

    folder = child.workdir / 'import-target'
    shutil.rmtree(folder, ignore_errors=True)
    profile = SqliteDosStorage.create_profile('target', filepath=folder, default_user_email='bench@scale')
    SqliteDosStorage.initialise(profile)
    target = SqliteDosStorage(profile)
    t0 = time.perf_counter()
    import_archive(target, child.workdir / 'export.aiida')
    seconds = time.perf_counter() - t0
    (nodes,) = target.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone()
    (links,) = target.get_session().execute('SELECT count(*) FROM db_dblink').fetchone()
    target.close()
    check((nodes, links) == (child.shape['n'], child.shape['links']), f'import: {nodes} nodes, {links} links')
    child.add('dos', 'archive_import', seconds, n_ops=child.shape['n'])
    shutil.rmtree(folder, ignore_errors=True)
    (child.workdir / 'export.aiida').unlink(missing_ok=True)


def step_archive_raw(child: Child) -> None:
    """``raw.r_archive`` (VACUUM INTO + zip of every object; unzip + INSERT ... SELECT + add_objects_to_pack)."""
    from disk_objectstore import Container

    rec = wl.Recorder(child.shape['n'], quiet=True)
    conn = sqlite3.connect(f'{(child.folder / "database.sqlite").as_uri()}?mode=ro', uri=True, isolation_level=None)
    container = Container(str(child.folder / 'container'))
    raw.r_archive(rec, conn, container, child.workdir)
    conn.close()
    container.close()
    names = {
        'export_zip(db copy + objects)': 'archive_create',
        'import_zip(insert-select + add_objects_to_pack)': 'archive_import',
    }
    for record in rec.records:
        child.add('raw', names[record['metric']], record['seconds'], n_ops=child.shape['n'])
    for name in ('raw-export.zip', 'archive-db.sqlite3', 'extracted-db.sqlite3', 'import-target.sqlite'):
        (child.workdir / name).unlink(missing_ok=True)
    shutil.rmtree(child.workdir / 'dos-import-target', ignore_errors=True)


def delete_ids(shape: dict[str, int]) -> list[int]:
    """The last ``delete`` Dicts (outside the group; their y links go with them)."""
    return list(range(shape['n_dicts'] - shape['delete'] + 1, shape['n_dicts'] + 1))


def step_delete_raw(child: Child) -> None:
    """The floor on a copy of the database (made before the clock starts): temp table of ids + two DELETEs."""
    copy = child.workdir / 'delete-copy.sqlite'
    copy_database(child.folder / 'database.sqlite', copy)
    conn = raw.connect('wal', copy)
    ids = delete_ids(child.shape)
    t0 = time.perf_counter()
    conn.execute('BEGIN')
    conn.execute('CREATE TEMP TABLE del_ids (id INTEGER PRIMARY KEY)')
    conn.executemany('INSERT INTO del_ids VALUES (?)', ((pk,) for pk in ids))
    conn.execute('DELETE FROM db_dblink WHERE input_id IN del_ids OR output_id IN del_ids')
    conn.execute('DELETE FROM db_dbnode WHERE id IN del_ids')
    conn.execute('COMMIT')
    child.add('raw', f'delete {len(ids)} nodes', time.perf_counter() - t0, n_ops=len(ids))
    conn.close()
    remove_database(copy)


def step_delete_dos(child: Child) -> None:
    storage = child.storage()
    ids = delete_ids(child.shape)
    (before,) = storage.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone()
    t0 = time.perf_counter()
    with storage.transaction():
        storage.delete_nodes_and_connections(ids)
    seconds = time.perf_counter() - t0
    (after,) = storage.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone()
    storage.close()
    check(before - after == len(ids), f'delete: {before - after} nodes gone, expected {len(ids)}')
    child.add('dos', f'delete {len(ids)} nodes', seconds, n_ops=len(ids))


# Raw before sqlitedos where sqlitedos' step changes the storage (maintain, delete: the raw side works on copies).
STEPS: list[tuple[str, Any]] = [
    ('build-raw', step_build_raw),
    ('build-dos', step_build_dos),
    ('queries-raw', lambda child: step_queries(child, 'raw')),
    ('queries-dos', lambda child: step_queries(child, 'dos')),
    ('ladder-raw', lambda child: step_ladder(child, 'raw')),
    ('ladder-dos', lambda child: step_ladder(child, 'dos')),
    ('queries-paired', step_queries_paired),
    ('ladder-paired', step_ladder_paired),
    ('verify-raw', step_verify_raw),
    ('verify-raw-threads', step_verify_raw_threads),
    ('verify-dos', step_verify_dos),
    ('backup-raw', step_backup_raw),
    ('backup-dos', step_backup_dos),
    ('archive-raw', step_archive_raw),
    ('archive-create-dos', step_archive_create_dos),
    ('archive-import-dos', step_archive_import_dos),
    ('maintain-raw', step_maintain_raw),
    ('maintain-dos', step_maintain_dos),
    ('delete-raw', step_delete_raw),
    ('delete-dos', step_delete_dos),
]
TIMEOUTS = {'ladder-dos': LADDER_TIMEOUT, 'ladder-paired': 2 * LADDER_TIMEOUT}
#: Steps of many short timings, run ``--rounds`` times: a burst of other work on a shared machine can slow one.
ROUNDED_STEPS = {'queries-paired', 'ladder-paired'}


def run_child(args: argparse.Namespace) -> int:
    child = Child(args)
    dict(STEPS)[args.child](child)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({'peak_rss': peak}), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------------- the parent

#: scale metric -> (workload, metric) of the same operation in ``make bench`` (its raw comparator from report.ROWS).
TEN_K = {
    'bulk_insert(nodes + links)': ('W2', 'bulk_insert_dict'),
    **{name: ('W4', name) for name in report.W4_QUERIES},
    'archive_create': ('W6', 'create_archive(all)'),
    'archive_import': ('W6', 'import_archive(fresh profile)'),
    'maintain(full)': ('W5', 'maintain_full'),
}
DELETE_10K = ('W7', 'delete_nodes_and_connections(half of W2)')


def run_step(args: argparse.Namespace, name: str) -> tuple[list[dict], int | None, str | None]:
    """Run one step in a fresh process: its records, its peak RSS and, if it failed, why."""
    command = [sys.executable, str(Path(__file__).resolve()), '--child', name, '--workdir', str(args.workdir)]
    command += ['--n', str(args.n), '--links', str(args.links), '--files', str(args.files)]
    timeout = TIMEOUTS.get(name)
    wl.log(f'step {name}')
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        out, failure = done.stdout, None if done.returncode == 0 else done.stderr.strip().splitlines()[-1:]
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ''
        failure = [f'timed out after {timeout:.0f} s']
    records, peak = [], None
    for line in out.splitlines():
        if line.startswith('{'):
            item = json.loads(line)
            records += [item['record']] if 'record' in item else []
            peak = item.get('peak_rss', peak)
    for record in records:
        record['peak_rss'], record['step'] = peak, name
    return records, peak, (failure[0] if failure else None) if failure is not None else None


def ten_k(metric: str) -> tuple[dict | None, float | None]:
    """The 10k figure of ``make bench`` for ``metric`` and its ratio to raw, from bench/results.json."""
    if not RESULTS_10K.exists():
        return None, None
    idx = report.index(json.loads(RESULTS_10K.read_text()))
    key = DELETE_10K if metric.startswith('delete ') else TEN_K.get(metric)
    if key is None:
        return None, None
    dos = idx.get((report.DOS, *key))
    row = next((r for r in report.ROWS if (r.workload, r.metric) == key), None)
    comparator = report.raw_lookup(idx, key[0], row.raw) if row else None
    return dos, report.ratio(dos, comparator)


def mib(value: int | None) -> str:
    return '-' if value is None else f'{value / 2**20:,.0f} MiB'


def table(results: dict) -> str:
    """The markdown table: per metric, sqlitedos and raw (same run), ratio, peak RSS of each, the 10k figure."""
    by: dict[str, dict[str, dict]] = {}
    paired: dict[tuple[str, str], dict] = {}
    for record in results['records']:
        if record.get('paired'):
            paired[record['metric'], record['side']] = record
        else:
            by.setdefault(record['metric'], {})[record['side']] = record
    for (metric, side), record in paired.items():  # timings from the interleaved run, peak RSS from the side's own
        sides = by.setdefault(metric, {})
        sides[side] = {**sides.get(side, {}), 'seconds': record['seconds'], 'side': side}
    lines = [
        '| step | sqlitedos | raw floor | ratio | sqlitedos peak RSS | raw peak RSS | 10k (`make bench`) | 10k ratio |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for metric, sides in by.items():
        dos, floor = sides.get('dos'), sides.get('raw')
        value = dos['seconds'] / floor['seconds'] if dos and floor and dos['seconds'] and floor['seconds'] else None
        at_10k, ratio_10k = ten_k(metric)

        def cell(record: dict | None) -> str:
            if record is None:
                return '-'
            text = report.fmt_seconds(record['seconds']) if record['seconds'] is not None else 'not finished'
            rows = record.get('rows')
            return f'{text} ({rows:,} rows)' if rows is not None and record['side'] == 'dos' else text

        dos_cell = cell(dos)
        if dos is None and floor is not None:
            failure = results['failures'].get(floor['step'].replace('-raw', '-dos'))
            dos_cell = f'not finished ({failure})' if failure else dos_cell
        lines.append(
            f'| {metric} | {dos_cell} | {cell(floor)} | {report.fmt_ratio(value)} | '
            f'{mib(dos and dos.get("peak_rss"))} | {mib(floor and floor.get("peak_rss"))} | '
            f'{report.fmt_seconds(at_10k["seconds"]) if at_10k else "-"} | {report.fmt_ratio(ratio_10k)} |'
        )
    for name, failure in results['failures'].items():
        lines.append(f'\n- step `{name}`: {failure}')
    return '\n'.join(lines)


def header(results: dict) -> str:
    meta = results['meta']
    shape = meta['shape']
    return (
        f'Run {meta["date"]} at commit {meta["git_commit"]}: {shape["n"]:,} nodes ({shape["n_dicts"]:,} Dicts, a '
        f'chain of {shape["calcs"]:,} calcs, {shape["folders"]:,} FolderData, a {LADDER_STEPS}-step diamond ladder), '
        f'{shape["links"]:,} links, {shape["files"]:,} files; group of {shape["group_size"]:,}; Python '
        f'{meta["python"]}, SQLite {meta["sqlite"]}, {meta["machine"]}; load average at start '
        f'{meta["load_start"]}, at end {meta["load_end"]}; wall time {meta["wall_seconds"]:.0f} s.'
    ) + ''.join(
        f'\nRe-measured {part["date"]} at commit {part["git_commit"]} (load {part["load_start"]} / {part["load_end"]}): '
        f'{", ".join(part["steps"])}.'
        for part in meta.get('merged', [])
    )


def update_readme(text: str) -> None:
    content = README.read_text()
    block = f'{START}\n{text}\n{END}'
    if START in content:
        before, rest = content.split(START, 1)
        content = before + block + rest.split(END, 1)[1]
    else:
        content += f'\n{block}\n'
    README.write_text(content)


def git_commit() -> str:
    done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=BENCH)
    return done.stdout.strip() or 'unknown'


def run_parent(args: argparse.Namespace) -> int:
    shape = shape_of(args.n, args.links, args.files)
    scratch = args.workdir is None
    args.workdir = Path(args.workdir or tempfile.mkdtemp(prefix='sqlitedos-scale-'))
    if not args.reuse:
        shutil.rmtree(args.workdir / 'dos', ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    load_start = ' '.join(f'{x:.1f}' for x in os.getloadavg())
    t0 = time.perf_counter()
    records, failures = [], {}
    try:
        for name, _ in STEPS:
            if args.steps and name not in args.steps and (args.reuse or not name.startswith('build')):
                continue
            got, _, failure = run_step(args, name)
            for _ in range(args.rounds - 1 if name in ROUNDED_STEPS and not failure else 0):
                again, _, failure = run_step(args, name)
                got = fastest(got, again)
            records += got
            if failure:
                failures[name] = failure
                wl.log(f'step {name} failed: {failure}')
                if name.startswith('build'):
                    break
    finally:
        if scratch and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    import sqlite3 as _sqlite3

    meta = {
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'git_commit': git_commit(),
        'shape': shape,
        'python': platform.python_version(),
        'sqlite': _sqlite3.sqlite_version,
        'machine': f'{platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}',
        'load_start': load_start,
        'load_end': ' '.join(f'{x:.1f}' for x in os.getloadavg()),
        'wall_seconds': time.perf_counter() - t0,
    }
    results = {'meta': meta, 'records': records, 'failures': failures}
    if args.merge and RESULTS.exists():
        results = merge_results(json.loads(RESULTS.read_text()), results)
    if args.update_readme or args.merge:  # a trial run leaves the recorded results alone
        RESULTS.write_text(json.dumps(results, indent=1) + '\n')
    text = f'{header(results)}\n\n{table(results)}'
    print(text)
    if args.update_readme:
        update_readme(text)
    return 1 if failures else 0


def fastest(first: list[dict], second: list[dict]) -> list[dict]:
    """Per side and metric, the faster record of two rounds of one step (the slower was disturbed by other work)."""
    best = {(record['side'], record['metric']): record for record in first}
    for record in second:
        key = (record['side'], record['metric'])
        known = best.get(key)
        rounds = (known or {}).get('rounds', 1) + 1
        faster = known is None or (
            record['seconds'] is not None and (known['seconds'] is None or record['seconds'] < known['seconds'])
        )
        best[key] = {**(record if faster else known), 'rounds': rounds}
    return list(best.values())


def merge_results(old: dict, new: dict) -> dict:
    """``old`` with the steps ``new`` ran replaced by their new records (noted in ``meta['merged']``)."""
    steps = {record['step'] for record in new['records']}
    records = [record for record in old['records'] if record['step'] not in steps] + new['records']
    order = [name for name, _ in STEPS]
    records.sort(key=lambda record: order.index(record['step']))
    failures = {name: text for name, text in old['failures'].items() if name not in steps} | new['failures']
    merged = old['meta'].get('merged', []) + [
        {
            'date': new['meta']['date'],
            'git_commit': new['meta']['git_commit'],
            'steps': sorted(steps),
            'load_start': new['meta']['load_start'],
            'load_end': new['meta']['load_end'],
        }
    ]
    return {'meta': {**old['meta'], 'merged': merged}, 'records': records, 'failures': failures}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--n', type=int, default=DEFAULT_N, help='nodes (default 1,000,000)')
    parser.add_argument('--links', type=int, default=None, help='links (default: N)')
    parser.add_argument('--files', type=int, default=None, help='files (default: 100,000, or N/10 if smaller)')
    parser.add_argument('--workdir', default=None, help='scratch folder (default: a new temp folder, removed)')
    parser.add_argument('--keep', action='store_true', help='keep the scratch folder')
    parser.add_argument(
        '--rounds', type=int, default=2, help='runs of each query step (fresh processes); the fastest per query counts'
    )
    parser.add_argument('--steps', default='', help='comma-separated steps to run (the build always runs)')
    parser.add_argument(
        '--update-readme', action='store_true', help='write bench/scale-results.json and the table in bench/README.md'
    )
    parser.add_argument(
        '--reuse', action='store_true', help='with --workdir and --steps: keep the storage built before'
    )
    parser.add_argument('--merge', action='store_true', help='replace these steps in bench/scale-results.json')
    parser.add_argument('--render', action='store_true', help='only render bench/scale-results.json')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.links = args.n if args.links is None else args.links
    args.files = min(DEFAULT_FILES, args.n // 10) if args.files is None else args.files
    args.steps = {step for step in args.steps.split(',') if step}
    return args


def render_only(args: argparse.Namespace) -> int:
    """Print (and with ``--update-readme`` write) the table of bench/scale-results.json without running."""
    results = json.loads(RESULTS.read_text())
    text = f'{header(results)}\n\n{table(results)}'
    print(text)
    if args.update_readme:
        update_readme(text)
    return 0


def main() -> int:
    args = parse_args()
    if args.render:
        return render_only(args)
    return run_child(args) if args.child else run_parent(args)


if __name__ == '__main__':
    sys.exit(main())
