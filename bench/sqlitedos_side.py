"""The workloads W1-W7 on sqlitedos: a folder storage (``sqlitedos-dos``) and the temp backend (``sqlitedos-temp``).

Every workload checks its answers (counts and contents, W4 against ``workloads.expected_rows`` and against natural SQL
run on the same database), so a fast wrong answer raises ``WrongAnswer``. A workload whose API has not landed yet
raises ``NotAvailable`` before anything is timed.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import raw
import workloads as wl

DOS, TEMP = 'sqlitedos-dos', 'sqlitedos-temp'


class NotAvailable(Exception):
    """The sqlitedos API a workload drives is not there (yet)."""


class WrongAnswer(AssertionError):
    """A workload returned a wrong result: the run fails, however fast it was."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise WrongAnswer(message)


def require(module: str, *names: str) -> Any:
    """The module (or the attribute chain ``names`` of it); ``NotAvailable`` if it cannot be imported or is absent."""
    import importlib

    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise NotAvailable(f'{module}: {exc}') from exc
    for name in names:
        if not hasattr(obj, name):
            raise NotAvailable(f'{module}.{".".join(names)} is missing')
        obj = getattr(obj, name)
    return obj


@dataclass
class Context:
    """One storage under test and what the workloads left in it."""

    backend: str
    storage: Any
    n: int
    workdir: Path
    rec: wl.Recorder
    w1_pks: list[int] = field(default_factory=list)
    w2_pks: list[int] = field(default_factory=list)
    root: int | None = None
    folder: Path | None = None

    def add(self, workload: str, metric: str, n_ops: int, unit: str, seconds: float, **extra: Any) -> dict:
        return self.rec.add(self.backend, workload, metric, n_ops, unit, seconds, **extra)

    @property
    def conn(self) -> Any:
        return self.storage.get_session()


def open_dos(folder: Path) -> Any:
    from sqlitedos import SqliteDosStorage

    profile = SqliteDosStorage.create_profile(folder.name, filepath=folder, default_user_email='bench@sqlitedos')
    if not folder.exists():
        SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def open_temp() -> Any:
    from sqlitedos import SqliteTempBackend

    return SqliteTempBackend(SqliteTempBackend.create_profile('bench-temp'))


# ------------------------------------------------------------------------------------------------------- W1-W3


def check_dicts(ctx: Context, pks: list[int]) -> None:
    """The Dict rows with these pks hold exactly ``dict_attributes(i)`` in order, read with plain SQL."""
    check(len(pks) == ctx.n and len(set(pks)) == ctx.n, f'{len(pks)} pks returned for {ctx.n} nodes')
    rows = ctx.conn.execute(
        'SELECT id, node_type, attributes FROM db_dbnode WHERE id IN (SELECT value FROM json_each(?))',
        (json.dumps(pks),),
    ).fetchall()
    stored = {pk: (node_type, attributes) for pk, node_type, attributes in rows}
    check(len(stored) == ctx.n, f'{len(stored)} of {ctx.n} Dict rows found')
    for i, pk in enumerate(pks):
        node_type, attributes = stored[pk]
        check(node_type == wl.DICT_NODE_TYPE and json.loads(attributes) == wl.dict_attributes(i), f'row {pk} differs')


def w1_store_one_by_one(ctx: Context) -> None:
    storage, user = ctx.storage, ctx.storage.default_user
    check(user is not None, 'the storage has no default user')
    create = storage.nodes.create
    t0 = time.perf_counter()
    pks = []
    for i in range(ctx.n):
        node = create(node_type=wl.DICT_NODE_TYPE, user=user)
        node.set_attribute_many(wl.dict_attributes(i))
        node.store()
        pks.append(node.pk)
    ctx.add('W1', 'store_dict_one_by_one', ctx.n, 'nodes', time.perf_counter() - t0)
    check_dicts(ctx, pks)
    ctx.w1_pks = pks


def w2_bulk_insert(ctx: Context, timed: bool = True) -> list[int]:
    from sqlitedos import EntityTypes

    rows = wl.bulk_rows(ctx.n, ctx.storage.default_user.pk, datetime.datetime.now(datetime.timezone.utc))
    t0 = time.perf_counter()
    pks = ctx.storage.bulk_insert(EntityTypes.NODE, rows)
    if timed:
        ctx.add('W2', 'bulk_insert_dict', ctx.n, 'nodes', time.perf_counter() - t0)
    check_dicts(ctx, pks)
    return pks


def w3_chain(ctx: Context) -> None:
    from sqlitedos import LinkType

    storage, user, n_calcs = ctx.storage, ctx.storage.default_user, wl.chain_shape(ctx.n)
    create = storage.nodes.create

    def new_int(value: int) -> Any:
        node = create(node_type=wl.INT_NODE_TYPE, user=user)
        node.set_attribute('value', value)
        return node

    t0 = time.perf_counter()
    prev = new_int(0).store()
    root = prev.pk
    for k in range(n_calcs):
        extra = new_int(k).store()
        calc = create(node_type=wl.CALC_NODE_TYPE, user=user)
        calc.store(links=[(prev, LinkType.INPUT_CALC, 'x'), (extra, LinkType.INPUT_CALC, 'y')])
        out = new_int(k + 1)
        out.store(links=[(calc, LinkType.CREATE, 'result')])
        calc.set_attribute('sealed', True)  # as aiida's engine seals a calculation once its outputs are attached
        prev = out
    dt = time.perf_counter() - t0
    ctx.add('W3', 'chain_calcs', n_calcs, 'calcs', dt, nodes=1 + 3 * n_calcs, links=3 * n_calcs)
    ctx.add('W3', 'chain_nodes', 1 + 3 * n_calcs, 'nodes', dt)
    check_chain(ctx, root, n_calcs)
    ctx.root = root


def check_chain(ctx: Context, root: int, n_calcs: int) -> None:
    conn = ctx.conn
    links = conn.execute('SELECT count(*) FROM db_dblink WHERE input_id >= ?', (root,)).fetchone()[0]
    check(links == 3 * n_calcs, f'W3: {links} links, expected {3 * n_calcs}')
    sealed = conn.execute(
        "SELECT count(*) FROM db_dbnode WHERE node_type = ? AND json_extract(attributes, '$.sealed') = 1",
        (wl.CALC_NODE_TYPE,),
    ).fetchone()[0]
    check(sealed == n_calcs, f'W3: {sealed} sealed calcs, expected {n_calcs}')
    last = conn.execute(
        "SELECT json_extract(attributes, '$.value') FROM db_dbnode WHERE node_type = ? ORDER BY id DESC LIMIT 1",
        (wl.INT_NODE_TYPE,),
    ).fetchone()[0]
    check(last == n_calcs, f'W3: the last output holds {last}, expected {n_calcs}')


# ------------------------------------------------------------------------------------------------------------ W4


def reference_answer(conn: Any, n: int, root: int, name: str) -> Any:
    """The answer of natural SQL on the same database, normalised for comparison."""
    sql, params, how = raw.raw_queries(n, root)[name]
    rows = raw.run_raw_query(conn, sql, params, 'rows' if how == 'decode' else how)
    return normalise(name, [list(row) for row in rows] if how != 'scalar' else rows[0])


def normalise(name: str, result: Any) -> Any:
    if name == 'a_count_dict':
        return result
    if name == 'c_i_gt_half_desc_limit100':  # ordered
        return [tuple(row) for row in result]
    if name == 'g_project_star_1000':  # LIMIT without ORDER BY: any 1000 Dicts
        return len(result)
    return sorted(tuple(row) for row in result)


def check_star_rows(rows: list) -> None:
    """W4(g): each row is one stored Dict node entity with its decoded attributes."""
    for (node,) in rows:
        attributes = node.attributes
        check(node.node_type == wl.DICT_NODE_TYPE and node.pk is not None, f'W4(g): not a stored Dict: {node!r}')
        check(attributes == wl.dict_attributes(attributes['i']), f'W4(g): attributes of {node.pk} differ')


def w4_queries(ctx: Context) -> None:
    query = ctx.storage.query()
    try:
        from sqlitedos.query.builder import QueryBuilder
    except ImportError:
        QueryBuilder = None
    expected = wl.expected_rows(ctx.n)
    conn = ctx.conn
    for name, spec in wl.queries(ctx.n, ctx.root).items():
        qh, op = spec['queryhelp'], spec['op']
        # a fresh copy of the query dict for each call, made before the clock starts (the builder may keep or change it)
        copies = [wl.instantiate(qh) for _ in range(wl.QUERY_REPEATS + 1)]
        if QueryBuilder is not None:  # the user's path, as aiida's figures are QueryBuilder.from_dict(...).all()

            def run(copies=copies, op=op) -> Any:
                qb = QueryBuilder.from_dict(ctx.storage, copies.pop())
                return qb.count() if op == 'count' else qb.all()
        else:

            def run(copies=copies, op=op) -> Any:
                return query.count(copies.pop()) if op == 'count' else list(query.iterall(copies.pop()))

        med, runs, result = wl.time_repeated(run)
        rows = result if op == 'count' else len(result)
        check(rows == expected[name], f'W4 {name}: {rows} rows, expected {expected[name]}')
        if name == 'g_project_star_1000':
            check_star_rows(result)
        reference = reference_answer(conn, ctx.n, ctx.root, name)
        check(normalise(name, result) == reference, f'W4 {name}: the rows differ from plain SQL on the same data')
        ctx.add(
            'W4',
            name,
            1,
            'queries',
            med,
            rows=rows,
            expected_rows=expected[name],
            correct=True,
            inner_runs=runs,
            api='QueryBuilder.from_dict' if QueryBuilder else 'storage.query()',
        )
        w4_prepared(ctx, name, qh, op, expected[name])
        w4_sql_split(ctx, name, qh, op)


def w4_prepared(ctx: Context, name: str, qh: dict, op: str, expected_rows: int) -> None:
    """The same query prepared once (``storage.query().prepare(dict)``) and run again: repeated lookups' path."""
    query = ctx.storage.query()
    if not hasattr(query, 'prepare'):
        return
    prepared = query.prepare(wl.instantiate(qh))
    med, runs, result = wl.time_repeated(lambda: prepared.count() if op == 'count' else prepared.all())
    rows = result if op == 'count' else len(result)
    check(rows == expected_rows, f'W4 {name} (prepared): {rows} rows, expected {expected_rows}')
    reference = reference_answer(ctx.conn, ctx.n, ctx.root, name)
    check(normalise(name, result) == reference, f'W4 {name} (prepared): the rows differ from plain SQL')
    ctx.add('W4', f'{name}[prepared]', 1, 'queries', med, rows=rows, correct=True, inner_runs=runs)


def w4_sql_split(ctx: Context, name: str, qh: dict, op: str) -> None:
    """The SQL sqlitedos compiles, run straight through sqlite3 (Python share), and natural SQL on the same data."""
    conn = ctx.conn
    query = ctx.storage.query()
    if hasattr(query, 'compile'):
        compiled = query.compile(wl.instantiate(qh))
        sql = f'SELECT COUNT(*) FROM ({compiled.sql})' if op == 'count' else compiled.sql
        med, _, _ = wl.time_repeated(lambda: conn.execute(sql, compiled.params).fetchall())
        plan = [row[-1] for row in conn.execute(f'EXPLAIN QUERY PLAN {sql}', compiled.params)]
        ctx.add('W4', f'{name}[sqlitedos-sql-via-sqlite3]', 1, 'queries', med, sql=sql, plan=plan)
    raw_sql, params, how = raw.raw_queries(ctx.n, ctx.root)[name]
    med, _, _ = wl.time_repeated(lambda: raw.run_raw_query(conn, raw_sql, params, how))
    ctx.add('W4', f'{name}[natural-sql-same-db]', 1, 'queries', med)


# ------------------------------------------------------------------------------------------------------------ W5


def w5_repository(ctx: Context) -> None:
    require('sqlitedos.repository.tree', 'NodeRepository')
    storage, user, n = ctx.storage, ctx.storage.default_user, ctx.n
    per = wl.FILES_PER_NODE
    n_nodes = max(1, n // per)
    n_files = n_nodes * per
    payloads = [wl.payload('w5node', i) for i in range(n_files)]

    wl.settle_disk()  # as the raw side does before its loose writes
    t0 = time.perf_counter()
    nodes = []
    for j in range(n_nodes):
        node = storage.nodes.create(node_type=wl.FOLDER_NODE_TYPE, user=user)
        for f in range(per):
            node.repository.put_object_from_filelike(io.BytesIO(payloads[j * per + f]), f'f{f}.bin')
        node.store()
        nodes.append(node)
    ctx.add('W5', 'node_put_files(loose)', n_files, 'files', time.perf_counter() - t0, nodes=n_nodes)

    def read_all() -> None:
        for j, node in enumerate(nodes):
            for f in range(per):
                if node.repository.get_object_content(f'f{f}.bin', mode='rb') != payloads[j * per + f]:
                    raise WrongAnswer(f'W5: content of node {node.pk} f{f}.bin differs')

    dt, _ = wl.time_call(read_all)
    ctx.add('W5', 'node_read_files(loose)', n_files, 'files', dt)

    dt, _ = wl.time_call(lambda: storage.maintain(full=True))
    ctx.add('W5', 'maintain_full', n_files, 'files', dt)
    counts = storage.get_container().count_objects()
    check(counts.loose == 0 and counts.packed >= n_files, f'W5: after maintain(full=True): {counts}')

    dt, _ = wl.time_call(read_all)
    ctx.add('W5', 'node_read_files(packed)', n_files, 'files', dt, packed_objects=counts.packed)

    repo = storage.get_repository()
    direct = [wl.payload('w5direct', i) for i in range(n)]
    wl.settle_disk()
    t0 = time.perf_counter()
    keys = [repo.put_object_from_filelike(io.BytesIO(p)) for p in direct]
    ctx.add('W5', 'backend_put_object_from_filelike(loose)', n, 'objects', time.perf_counter() - t0)

    def read_each() -> None:
        for key, p in zip(keys, direct):
            if repo.get_object_content(key) != p:
                raise WrongAnswer(f'W5: content of object {key} differs')

    dt, _ = wl.time_call(read_each)
    ctx.add('W5', 'backend_get_object_content(loose)', n, 'objects', dt)

    def read_iter() -> None:
        got = {key: stream.read() for key, stream in repo.iter_object_streams(keys)}
        check(len(got) == n and all(got[key] == p for key, p in zip(keys, direct)), 'W5: iter_object_streams differs')

    dt, _ = wl.time_call(read_iter)
    ctx.add('W5', 'backend_iter_object_streams(loose)', n, 'objects', dt)


# ------------------------------------------------------------------------------------------------------------ W6


def node_summary(storage: Any) -> tuple[int, int, list]:
    conn = storage.get_session()
    nodes = conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0]
    links = conn.execute('SELECT count(*) FROM db_dblink').fetchone()[0]
    sample = conn.execute(
        'SELECT uuid, node_type, attributes, repository_metadata FROM db_dbnode ORDER BY uuid LIMIT 50'
    ).fetchall()
    return nodes, links, [(u, t, json.loads(a or '{}'), json.loads(r or '{}')) for u, t, a, r in sample]


def referenced_keys(storage: Any) -> set[str]:
    """The object keys that the nodes' ``repository_metadata`` (aiida's nested ``{'o': {name: {'k': key}}}``) hold."""
    keys: set[str] = set()

    def walk(entry: dict) -> None:
        if 'k' in entry:
            keys.add(entry['k'])
        for child in entry.get('o', {}).values():
            walk(child)

    for (metadata,) in storage.get_session().execute(
        "SELECT repository_metadata FROM db_dbnode WHERE repository_metadata != '{}'"
    ):
        walk(json.loads(metadata))
    return keys


def w6_archive(ctx: Context) -> None:
    create_archive = require('sqlitedos.archive', 'create_archive')
    import_archive = require('sqlitedos.archive', 'import_archive')
    storage = ctx.storage
    nodes, links, sample = node_summary(storage)
    path = ctx.workdir / 'export.aiida'
    path.unlink(missing_ok=True)
    dt, _ = wl.time_call(lambda: create_archive(storage, path))
    size = path.stat().st_size
    ctx.add('W6', 'create_archive(all)', nodes, 'nodes', dt, archive_bytes=size)

    target = open_dos(ctx.workdir / 'import-target')
    try:
        dt, _ = wl.time_call(lambda: import_archive(target, path))
        ctx.add('W6', 'import_archive(fresh profile)', nodes, 'nodes', dt, archive_bytes=size)
        got_nodes, got_links, got_sample = node_summary(target)
        check(
            (got_nodes, got_links) == (nodes, links),
            f'W6: imported {got_nodes} nodes / {got_links} links, expected {nodes} / {links}',
        )
        check(got_sample == sample, 'W6: imported node rows differ from the exported ones')
        keys = referenced_keys(storage)
        present = target.get_repository().has_objects(sorted(keys))
        check(all(present), f'W6: {present.count(False)} of the {len(keys)} exported files are missing after import')
    finally:
        target.close()


# ------------------------------------------------------------------------------------------------------------ W7


def w7_delete(ctx: Context) -> None:
    delete_nodes = require('sqlitedos.graph', 'delete_nodes')
    storage, n = ctx.storage, ctx.n
    conn = ctx.conn
    before = conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0]
    half_w1 = ctx.w1_pks[::2]
    t0 = time.perf_counter()
    deleted = delete_nodes(storage, half_w1, dry_run=False)
    ctx.add('W7', 'delete_nodes(half of W1)', len(deleted), 'nodes', time.perf_counter() - t0)
    check(set(deleted) == set(half_w1), f'W7: delete_nodes deleted {len(deleted)}, expected {len(half_w1)}')

    half_w2 = ctx.w2_pks[::2]
    t0 = time.perf_counter()
    with storage.transaction():
        storage.delete_nodes_and_connections(half_w2)
    ctx.add('W7', 'delete_nodes_and_connections(half of W2)', len(half_w2), 'nodes', time.perf_counter() - t0)

    t0 = time.perf_counter()
    deleted = delete_nodes(storage, [ctx.root], dry_run=False)
    ctx.add('W7', 'delete_nodes(W3 root, cascades)', len(deleted), 'nodes', time.perf_counter() - t0)
    check(len(deleted) == 1 + 2 * wl.chain_shape(n), f'W7: the cascade deleted {len(deleted)} nodes')
    after = conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0]
    expected = before - len(half_w1) - len(half_w2) - (1 + 2 * wl.chain_shape(n))
    check(after == expected, f'W7: {after} nodes left, expected {expected}')
    left = conn.execute('SELECT count(*) FROM db_dblink WHERE input_id = ? OR output_id = ?', (ctx.root,) * 2)
    check(left.fetchone()[0] == 0, 'W7: links of the deleted root remain')


# ------------------------------------------------------------------------------------------------------ cold start

COLD_SCRIPT = """
import json, sys
from sqlitedos import SqliteDosStorage
storage = SqliteDosStorage(SqliteDosStorage.create_profile('cold', filepath=sys.argv[1]))
print(storage.query().count(json.loads(sys.argv[2])))
storage.close()
"""


def cold_env() -> dict[str, str]:
    """The environment of a cold-start process: bytecode caching on (an installed package has its ``.pyc`` files;
    with ``PYTHONDONTWRITEBYTECODE`` set, every start would compile sqlitedos from source). The untimed first
    start writes the cache."""
    env = dict(os.environ)
    env.pop('PYTHONDONTWRITEBYTECODE', None)
    return env


def cold_start(rec: wl.Recorder, folder: Path, n: int, repeats: int = 5) -> None:
    """A new process that imports sqlitedos, opens the folder storage and counts the Dicts; vs ``python -c pass``."""
    qh = json.dumps(wl.queries(n, -1)['a_count_dict']['queryhelp'])
    env = cold_env()
    for backend, argv in (
        ('python', [sys.executable, '-c', 'pass']),
        (DOS, [sys.executable, '-c', COLD_SCRIPT, str(folder), qh]),
    ):
        timings = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            proc = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
            timings.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise NotAvailable(f'cold start failed: {proc.stderr.strip().splitlines()[-1:]}')
            if backend == DOS:
                check(proc.stdout.strip() == str(2 * n), f'cold start counted {proc.stdout.strip()}, want {2 * n}')
        timings = sorted(timings[1:])  # the first run warms the page cache
        rec.add(
            backend,
            'cold',
            'cold_start(process+import+open+count)',
            1,
            'processes',
            timings[len(timings) // 2],
            inner_runs=timings,
        )
