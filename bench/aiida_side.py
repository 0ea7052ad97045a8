#!/usr/bin/env python
"""aiida-core 2.9.4's side of ``bench/run.py``: the same workloads on aiida's sqlite_dos and sqlite_temp storages.

Adapted from the shared anchor benchmark. Run with a Python that has aiida-core 2.9.4 (``.venv-aiida/bin/python``);
``run.py --aiida-python`` does that. Each repetition of each backend runs in a fresh worker process with fresh
profiles under its own ``AIIDA_PATH``; all records (one per metric and run; backends ``aiida-dos`` and
``aiida-temp``) go as a JSON list to ``--out``. ``run.py`` takes the medians. W4 answers are checked against
``workloads.expected_rows``; a wrong answer makes the worker exit 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workloads as wl
from workloads import log

ALL_DOS = ['W1', 'W2', 'W3', 'W4', 'cold', 'W5', 'W6', 'W7']
ALL_TEMP = ['W1', 'W2', 'W3', 'W4']
#: The sqlitedos.dos storage plugin (sqlitedos under aiida's own ORM): backend ``aiida-plugin``.
ALL_PLUGIN = ['W1', 'W2', 'W3', 'W4', 'W8']


def verdi(*args: str) -> None:
    exe = Path(sys.executable).parent / 'verdi'
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def new_dos_profile(name: str) -> None:
    verdi('presto', '--profile-name', name)
    verdi('-p', name, 'config', 'set', 'logging.aiida_loglevel', 'WARNING')  # no REPORT chatter from export etc.


def new_plugin_profile(name: str, folder: Path) -> None:
    """A profile on the ``sqlitedos.dos`` storage plugin (``verdi profile setup``, as a user would make it)."""
    verdi(
        'profile',
        'setup',
        'sqlitedos.dos',
        '-n',
        '--profile-name',
        name,
        '--email',
        f'{name}@bench.example',
        '--first-name',
        'Bench',
        '--last-name',
        'Mark',
        '--institution',
        'sqlitedos',
        '--broker',
        'none',
        '--filepath',
        str(folder),
    )
    verdi('-p', name, 'config', 'set', 'logging.aiida_loglevel', 'WARNING')


def drop_dos_profile(name: str) -> None:
    try:
        verdi('profile', 'delete', '--force', '--delete-data', name)
    except subprocess.CalledProcessError as exc:  # pragma: no cover - best effort cleanup
        log(f'could not delete profile {name}: {exc}')


def quiet_aiida() -> None:
    """Silence aiida's REPORT-level chatter (export/import/maintain), which loading a profile re-enables."""
    import logging

    for name in ['aiida', *[n for n in logging.root.manager.loggerDict if n.startswith('aiida')]]:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        logger.handlers.clear()  # aiida's handler filters by its own options; Python's last-resort handler is WARNING+


class Recorder(wl.Recorder):
    """``workloads.Recorder`` with a fixed backend name, as the anchor's workload functions call it."""

    def __init__(self, backend: str, n: int, rep: int) -> None:
        super().__init__(n, rep)
        self.backend = backend

    def add(self, workload: str, metric: str, n_ops: int, unit: str, seconds: float, **extra) -> dict:  # type: ignore[override]
        return super().add(self.backend, workload, metric, n_ops, unit, seconds, **extra)


COLD_SCRIPT = """
import sys
from aiida import load_profile, orm
load_profile(sys.argv[1])
print(orm.QueryBuilder().append(orm.Dict).count())
"""


def cold_start(rec: Recorder, n: int, profile: str, repeats: int = 5) -> None:
    """A new process that imports aiida, loads the profile and counts the Dicts (as sqlitedos' cold start)."""
    timings = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}  # as sqlitedos' cold start
        proc = subprocess.run(
            [sys.executable, '-c', COLD_SCRIPT, profile], check=False, capture_output=True, text=True, env=env
        )
        timings.append(time.perf_counter() - t0)
        if proc.returncode != 0 or proc.stdout.strip().splitlines()[-1:] != [str(2 * n)]:
            raise AssertionError(f'cold start: {proc.stdout!r} {proc.stderr[-500:]!r}')
    timings = sorted(timings[1:])
    rec.add(
        'cold', 'cold_start(process+import+open+count)', 1, 'processes', timings[len(timings) // 2], inner_runs=timings
    )


# ----------------------------------------------------------------------------------------------------------- workloads


def w1_store_one_by_one(rec: Recorder, n: int) -> list[int]:
    from aiida import orm

    pks = []
    t0 = time.perf_counter()
    for i in range(n):
        node = orm.Dict(wl.dict_attributes(i)).store()
        pks.append(node.pk)
    rec.add('W1', 'store_dict_one_by_one', n, 'nodes', time.perf_counter() - t0)
    return pks


def w2_bulk_insert(rec: Recorder, n: int, storage) -> list[int]:
    from aiida import orm
    from aiida.common import timezone
    from aiida.orm.entities import EntityTypes

    user_id = orm.User.collection.get_default().pk
    now = timezone.now()
    rows = wl.bulk_rows(n, user_id, now)
    t0 = time.perf_counter()
    pks = storage.bulk_insert(EntityTypes.NODE, rows)
    rec.add('W2', 'bulk_insert_dict', n, 'nodes', time.perf_counter() - t0)
    assert len(pks) == n
    return pks


def w3_chain(rec: Recorder, n: int) -> int:
    from aiida import orm
    from aiida.common.links import LinkType

    n_calcs = wl.chain_shape(n)
    t0 = time.perf_counter()
    prev = orm.Int(0).store()
    root = prev.pk
    for k in range(n_calcs):
        extra = orm.Int(k).store()
        calc = orm.CalculationNode()
        calc.base.links.add_incoming(prev, LinkType.INPUT_CALC, 'x')
        calc.base.links.add_incoming(extra, LinkType.INPUT_CALC, 'y')
        calc.store()
        out = orm.Int(k + 1)
        out.base.links.add_incoming(calc, LinkType.CREATE, 'result')
        out.store()
        calc.seal()  # as the engine does once outputs are attached; archives refuse unsealed process nodes
        prev = out
    dt = time.perf_counter() - t0
    rec.add('W3', 'chain_calcs', n_calcs, 'calcs', dt, nodes=1 + 3 * n_calcs, links=3 * n_calcs)
    rec.add('W3', 'chain_nodes', 1 + 3 * n_calcs, 'nodes', dt)
    return root


def _dbapi_connection(storage):
    """The sqlite3.Connection under the storage's SQLAlchemy session (works for the file and the in-memory DB); the
    sqlitedos plugin's session is the sqlite3.Connection itself."""
    import sqlite3

    session = storage.get_session()
    if isinstance(session, sqlite3.Connection):
        return session
    return session.connection().connection.dbapi_connection


def w4_queries(rec: Recorder, n: int, root: int, storage) -> None:
    from aiida import orm

    expected = wl.expected_rows(n)
    dbapi = _dbapi_connection(storage)
    for name, spec in wl.queries(n, root).items():
        op = spec['op']

        copies = [wl.instantiate(spec['queryhelp']) for _ in range(wl.QUERY_REPEATS + 1)]  # made before the clock

        def run_qb(copies=copies, op=op):
            qb = orm.QueryBuilder.from_dict(copies.pop())
            return qb.count() if op == 'count' else qb.all()

        med, runs, result = wl.time_repeated(run_qb)
        rows = result if op == 'count' else len(result)
        ok = rows == expected[name]
        rec.add('W4', name, 1, 'queries', med, rows=rows, expected_rows=expected[name], correct=ok, inner_runs=runs)
        if not ok:
            log(f'!! {name}: got {rows} rows, expected {expected[name]}')

        # The very SQL aiida generated, executed straight through sqlite3 on the same connection: splits the time
        # between SQLite itself and aiida/SQLAlchemy's Python layers.
        sql = orm.QueryBuilder.from_dict(wl.instantiate(spec['queryhelp'])).as_sql(inline=True)
        if op == 'count':
            sql = f'SELECT count(*) FROM ({sql})'

        def run_sql(sql=sql):
            return dbapi.execute(sql).fetchall()

        med_sql, _, _ = wl.time_repeated(run_sql)
        rec.add('W4', f'{name}[aiida-sql-via-sqlite3]', 1, 'queries', med_sql)


def w5_repository(rec: Recorder, n: int, storage) -> None:
    from aiida import orm

    per = wl.FILES_PER_NODE
    n_nodes = max(1, n // per)
    n_files = n_nodes * per
    payloads = [wl.payload('w5node', i) for i in range(n_files)]

    # (a) N files into node repositories: FolderData nodes with FILES_PER_NODE files each, stored one by one.
    t0 = time.perf_counter()
    nodes = []
    for j in range(n_nodes):
        node = orm.FolderData()
        for f in range(per):
            node.base.repository.put_object_from_filelike(io.BytesIO(payloads[j * per + f]), f'f{f}.bin')
        node.store()
        nodes.append(node)
    rec.add('W5', 'node_put_files(loose)', n_files, 'files', time.perf_counter() - t0, nodes=n_nodes)

    def read_all():
        for j, node in enumerate(nodes):
            for f in range(per):
                content = node.base.repository.get_object_content(f'f{f}.bin', mode='rb')
                if content != payloads[j * per + f]:
                    raise AssertionError('content mismatch')

    dt, _ = wl.time_call(read_all)
    rec.add('W5', 'node_read_files(loose)', n_files, 'files', dt)

    dt, _ = wl.time_call(lambda: storage.maintain(full=True))
    rec.add('W5', 'maintain_full', n_files, 'files', dt)
    counts = storage.get_repository()._container.count_objects()
    assert counts.loose == 0, counts

    dt, _ = wl.time_call(read_all)
    rec.add('W5', 'node_read_files(packed)', n_files, 'files', dt, packed_objects=counts.packed)

    # (b) the repository backend directly (as aiida's node store does it: add_streamed_object per file).
    repo = storage.get_repository()
    direct = [wl.payload('w5direct', i) for i in range(n)]
    t0 = time.perf_counter()
    keys = [repo.put_object_from_filelike(io.BytesIO(p)) for p in direct]
    rec.add('W5', 'backend_put_object_from_filelike(loose)', n, 'objects', time.perf_counter() - t0)

    def read_each():
        for key, p in zip(keys, direct):
            if repo.get_object_content(key) != p:
                raise AssertionError('content mismatch')

    dt, _ = wl.time_call(read_each)
    rec.add('W5', 'backend_get_object_content(loose)', n, 'objects', dt)

    def read_iter():
        got = 0
        for _key, stream in repo.iter_object_streams(keys):
            got += len(stream.read())
        assert got == n * wl.PAYLOAD_SIZE

    dt, _ = wl.time_call(read_iter)
    rec.add('W5', 'backend_iter_object_streams(loose)', n, 'objects', dt)


def w6_archive(rec: Recorder, n: int, main_profile: str, import_profile: str, workdir: Path) -> None:
    from aiida import load_profile, orm
    from aiida.tools.archive import create_archive, import_archive

    n_nodes = orm.QueryBuilder().append(orm.Node).count()
    path = workdir / 'export.aiida'
    dt, _ = wl.time_call(lambda: create_archive(None, filename=path, overwrite=True))
    size = path.stat().st_size
    rec.add('W6', 'create_archive(all)', n_nodes, 'nodes', dt, archive_bytes=size)

    load_profile(import_profile, allow_switch=True)  # created (empty) at worker start, before the config was read
    quiet_aiida()
    dt, _ = wl.time_call(lambda: import_archive(path))
    imported = orm.QueryBuilder().append(orm.Node).count()
    rec.add('W6', 'import_archive(fresh profile)', n_nodes, 'nodes', dt, imported_nodes=imported, archive_bytes=size)
    assert imported == n_nodes, (imported, n_nodes)
    load_profile(main_profile, allow_switch=True)
    quiet_aiida()


def w7_delete(rec: Recorder, n: int, w1_pks: list[int], w2_pks: list[int], root: int, storage) -> None:
    from aiida.tools.graph.deletions import delete_nodes

    half_w1 = w1_pks[::2]
    t0 = time.perf_counter()
    deleted, _ = delete_nodes(half_w1, dry_run=False)
    rec.add('W7', 'delete_nodes(half of W1)', len(deleted), 'nodes', time.perf_counter() - t0)
    assert len(deleted) == len(half_w1)

    half_w2 = w2_pks[::2]
    t0 = time.perf_counter()
    with storage.transaction():
        storage.delete_nodes_and_connections(half_w2)
    rec.add('W7', 'delete_nodes_and_connections(half of W2)', len(half_w2), 'nodes', time.perf_counter() - t0)

    t0 = time.perf_counter()
    deleted, _ = delete_nodes([root], dry_run=False)
    rec.add('W7', 'delete_nodes(W3 root, cascades)', len(deleted), 'nodes', time.perf_counter() - t0)
    assert len(deleted) == 1 + 2 * wl.chain_shape(n), len(deleted)


CONCURRENT_SCRIPT = """
import sys, time
from aiida import load_profile, orm
load_profile(sys.argv[1])
role, seconds = sys.argv[2], float(sys.argv[3])
done = locked = other = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        if role == 'writer':
            orm.Dict({'w': done}).store()
        else:
            orm.QueryBuilder().append(orm.Dict, filters={'attributes.w': {'>': 5}}).count()
        done += 1
    except Exception as exc:
        if 'database is locked' in str(exc):
            locked += 1
        else:
            other += 1
print(done, locked, other)
"""


def w8_concurrency(rec: Recorder, profile: str, writers: int = 3, readers: int = 2, seconds: float = 12.0) -> None:
    """3 writer and 2 reader processes through aiida's ORM for ``seconds``: operations and "database is locked"."""
    roles = ['writer'] * writers + ['reader'] * readers
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', CONCURRENT_SCRIPT, profile, role, str(seconds)], stdout=subprocess.PIPE, text=True
        )
        for role in roles
    ]
    totals = {'writer': [0, 0, 0], 'reader': [0, 0, 0]}
    for role, proc in zip(roles, procs):
        out, _ = proc.communicate()
        for index, value in enumerate(out.split()[-3:]):
            totals[role][index] += int(value)
    locked = totals['writer'][1] + totals['reader'][1]
    other = totals['writer'][2] + totals['reader'][2]
    rec.add(
        'W8',
        f'concurrent({writers}w+{readers}r) writes',
        totals['writer'][0],
        'stores',
        seconds,
        database_locked=locked,
        other_errors=other,
        reads=totals['reader'][0],
    )
    log(f'W8: writes {totals["writer"]}, reads {totals["reader"]} (done, locked, other)')


# -------------------------------------------------------------------------------------------------------------- worker


def worker(args) -> None:
    os.environ['AIIDA_PATH'] = args.aiida_path
    import logging

    from aiida import load_profile
    from aiida.common.log import AIIDA_LOGGER
    from aiida.manage import get_manager

    AIIDA_LOGGER.setLevel(logging.WARNING)
    rec = Recorder(f'aiida-{args.worker}', args.n, args.rep)
    wanted = set(args.workloads.split(','))
    n = args.n
    tag = f'{args.worker}-{os.getpid()}'
    workdir = Path(tempfile.mkdtemp(prefix=f'aiida-bench-{tag}-'))
    profiles = []
    try:
        main = f'bench-{tag}'
        if args.worker == 'dos':
            imp = f'bench-{tag}-import'
            for name in [main] + ([imp] if 'W6' in wanted else []):
                new_dos_profile(name)
                profiles.append(name)
            load_profile(main, allow_switch=True)
        elif args.worker == 'plugin':
            new_plugin_profile(main, workdir / 'storage')
            profiles.append(main)
            load_profile(main, allow_switch=True)
        else:
            from aiida.storage.sqlite_temp import SqliteTempBackend

            profile = SqliteTempBackend.create_profile(f'bench-{tag}', options={'logging.aiida_loglevel': 'WARNING'})
            load_profile(profile, allow_switch=True)
        quiet_aiida()
        storage = get_manager().get_profile_storage()
        log(f'worker {tag}: {storage}')

        w1_pks = w1_store_one_by_one(rec, n) if 'W1' in wanted else []
        w2_pks = w2_bulk_insert(rec, n, storage) if 'W2' in wanted else []
        root = w3_chain(rec, n) if 'W3' in wanted else None
        if 'W4' in wanted:
            w4_queries(rec, n, root if root is not None else -1, storage)
        if 'W8' in wanted and args.worker in ('dos', 'plugin'):
            w8_concurrency(rec, main)
        if args.worker == 'dos':
            if 'cold' in wanted and w1_pks and w2_pks:
                cold_start(rec, n, main)
            if 'W5' in wanted:
                w5_repository(rec, n, storage)
            if 'W6' in wanted:
                w6_archive(rec, n, main, imp, workdir)
                storage = get_manager().get_profile_storage()
            if 'W7' in wanted and w1_pks and w2_pks and root is not None:
                w7_delete(rec, n, w1_pks, w2_pks, root, storage)
        get_manager().unload_profile()
    finally:
        Path(args.out).write_text(json.dumps(rec.records))
        if not args.keep:
            for name in profiles:
                drop_dos_profile(name)
            shutil.rmtree(workdir, ignore_errors=True)
    if any(r.get('correct') is False for r in rec.records):
        sys.exit(1)


def parent(args) -> None:
    records: list[dict] = []
    wanted = args.workloads.split(',')
    plan = [
        ('dos', [w for w in ALL_DOS + ['W8'] if w in wanted]),
        ('temp', [w for w in ALL_TEMP if w in wanted]),
        ('plugin', [w for w in ALL_PLUGIN if w in wanted]),
    ]
    failed = False
    for rep in range(args.reps):
        for backend, workloads in plan:
            if not workloads or backend not in args.backends.split(','):
                continue
            out = Path(tempfile.mkstemp(prefix='aiida-bench-', suffix='.json')[1])
            cmd = [
                sys.executable,
                __file__,
                '--worker',
                backend,
                '--rep',
                str(rep),
                '--n',
                str(args.n),
                '--workloads',
                ','.join(workloads),
                '--aiida-path',
                args.aiida_path,
                '--out',
                str(out),
            ]
            if args.keep:
                cmd.append('--keep')
            log(f'aiida rep {rep + 1}/{args.reps} {backend}: {" ".join(workloads)}')
            proc = subprocess.run(cmd, check=False)
            got = json.loads(out.read_text() or '[]')
            out.unlink(missing_ok=True)
            records.extend(got)
            if proc.returncode != 0:
                failed = True
                log(f'aiida worker failed with exit code {proc.returncode}; kept {len(got)} records')
    import aiida

    for r in records:
        r['aiida_core'] = aiida.__version__
    Path(args.out).write_text(json.dumps(records))
    if failed:
        sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=wl.DEFAULT_N)
    p.add_argument('--reps', type=int, default=wl.DEFAULT_REPS)
    p.add_argument('--backends', default='dos,temp,plugin', help='comma list of: dos, temp, plugin (sqlitedos.dos)')
    p.add_argument('--workloads', default=','.join(ALL_DOS))
    p.add_argument('--aiida-path', default=None, help='AIIDA_PATH for the profiles (default: a new temporary folder)')
    p.add_argument('--out', required=True, help='where the JSON list of records goes')
    p.add_argument('--keep', action='store_true', help='keep the profiles and archives (debugging)')
    p.add_argument('--worker', choices=['dos', 'temp', 'plugin'], help=argparse.SUPPRESS)
    p.add_argument('--rep', type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    own_path = args.aiida_path is None
    if own_path:
        args.aiida_path = tempfile.mkdtemp(prefix='aiida-bench-home-')
    os.environ['AIIDA_PATH'] = args.aiida_path
    try:
        worker(args) if args.worker else parent(args)
    finally:
        if own_path and not args.worker and not args.keep:
            shutil.rmtree(args.aiida_path, ignore_errors=True)


if __name__ == '__main__':
    main()
