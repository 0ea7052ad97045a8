"""Archive benchmarks: peak memory of ``import_archive`` at two sizes, and the W6 timings (create, import).

    .venv/bin/python bench/archive_memory.py --n 10000           # memory: n and 10 n nodes (files: n/4 and 10 n/4)
    .venv/bin/python bench/archive_memory.py --w6                 # W6: ~24k nodes + 10k files, create and import
    .venv/bin/python bench/archive_memory.py --w6 --json bench/results-archive.json   # for report.py --extra

Each measured step runs in a fresh subprocess; peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that
subprocess (KiB on Linux). The storages are built fast with bulk SQL and the container's bulk API, not through
the entity API. Memory passes if the peak at 10 n is within 1.5x of the peak at n.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlitedos import SqliteDosStorage
from sqlitedos.db import encode_datetime, encode_json, new_uuid, now

BATCH = 5000
FILES_PER_FOLDER = 10
PAYLOAD_SIZE = 1024
INSERT_NODE = """
INSERT INTO db_dbnode (uuid, node_type, process_type, label, description, ctime, mtime, attributes, extras,
                       repository_metadata, dbcomputer_id, user_id)
VALUES (?, ?, NULL, ?, '', ?, ?, ?, ?, ?, NULL, ?)
"""
INSERT_LINK = 'INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (?, ?, ?, ?)'


def payload(kind: str, i: int) -> bytes:
    return random.Random(f'{kind}-{i}').randbytes(PAYLOAD_SIZE)


def new_storage(path: Path) -> SqliteDosStorage:
    profile = SqliteDosStorage.create_profile('bench', filepath=path, default_user_email='bench@example.org')
    SqliteDosStorage.initialise(profile)
    return SqliteDosStorage(profile)


def populate(storage: SqliteDosStorage, n_dicts: int, n_chain: int, n_files: int) -> int:
    """Dict nodes, a chain of calculations (root Int, per calc: input Int, calc, output Int), FolderData with files.
    Returns the number of nodes."""
    connection = storage.get_session()
    (user,) = connection.execute('SELECT id FROM db_dbuser').fetchone()
    stamp = encode_datetime(now())
    folders = n_files // FILES_PER_FOLDER
    keys = storage.get_container().add_streamed_objects_to_pack(
        [__import__('io').BytesIO(payload('w6', i)) for i in range(folders * FILES_PER_FOLDER)], do_fsync=False
    )
    storage.get_container().close()
    with storage.transaction() as conn:
        rows = []
        for i in range(n_dicts):
            attributes = {'i': i, 'name': f'n{i}', 'tags': ['a', 'b'], 'nested': {'x': i % 7}}
            rows.append(
                (
                    new_uuid(),
                    'data.core.dict.Dict.',
                    f'd{i}',
                    stamp,
                    stamp,
                    encode_json(attributes),
                    encode_json({'_aiida_hash': 'h' * 64}),
                    '{}',
                    user,
                )
            )
            if len(rows) == BATCH:
                conn.executemany(INSERT_NODE, rows)
                rows = []
        conn.executemany(INSERT_NODE, rows)
        for f in range(folders):
            tree = {'o': {f'file{j}.bin': {'k': keys[f * FILES_PER_FOLDER + j]} for j in range(FILES_PER_FOLDER)}}
            conn.execute(
                INSERT_NODE,
                (
                    new_uuid(),
                    'data.core.folder.FolderData.',
                    f'f{f}',
                    stamp,
                    stamp,
                    '{}',
                    '{}',
                    encode_json(tree),
                    user,
                ),
            )
        previous = _insert(conn, 'data.core.int.Int.', 'root', {'value': 0}, stamp, user)
        for k in range(n_chain):
            y = _insert(conn, 'data.core.int.Int.', f'y{k}', {'value': k}, stamp, user)
            calc = _insert(conn, 'process.calculation.CalculationNode.', f'c{k}', {'sealed': True}, stamp, user)
            out = _insert(conn, 'data.core.int.Int.', f'o{k}', {'value': k + 1}, stamp, user)
            conn.executemany(
                INSERT_LINK,
                [(previous, calc, 'x', 'input_calc'), (y, calc, 'y', 'input_calc'), (calc, out, 'result', 'create')],
            )
            previous = out
        (count,) = conn.execute('SELECT count(*) FROM db_dbnode').fetchone()
    return count


def _insert(conn, node_type: str, label: str, attributes: dict, stamp: str, user: int) -> int:
    return conn.execute(
        INSERT_NODE + ' RETURNING id',
        (new_uuid(), node_type, label, stamp, stamp, encode_json(attributes), '{}', '{}', user),
    ).fetchone()[0]


# --- subprocess steps ---------------------------------------------------------------------------------------------


def step_build(workdir: Path, n_dicts: int, n_chain: int, n_files: int) -> dict:
    storage = new_storage(workdir / 'source')
    try:
        return {'nodes': populate(storage, n_dicts, n_chain, n_files)}
    finally:
        storage.close()


def step_create(workdir: Path) -> dict:
    from sqlitedos.archive import create_archive

    profile = SqliteDosStorage.create_profile('bench', filepath=workdir / 'source')
    storage = SqliteDosStorage(profile)
    try:
        start = time.perf_counter()
        create_archive(storage, workdir / 'archive.aiida', overwrite=True)
        seconds = time.perf_counter() - start
    finally:
        storage.close()
    return {'create_s': seconds, 'archive_bytes': (workdir / 'archive.aiida').stat().st_size}


def step_import(workdir: Path) -> dict:
    from sqlitedos.archive import import_archive

    storage = new_storage(workdir / 'target')
    try:
        start = time.perf_counter()
        import_archive(storage, workdir / 'archive.aiida')
        seconds = time.perf_counter() - start
        (nodes,) = storage.get_session().execute('SELECT count(*) FROM db_dbnode').fetchone()
    finally:
        storage.close()
    return {'import_s': seconds, 'imported_nodes': nodes}


def run_step(*args: str) -> dict:
    """Run one step in a fresh interpreter; its JSON result plus its peak RSS (MiB)."""
    result = subprocess.run([sys.executable, __file__, '--step', *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(n_dicts: int, n_chain: int, n_files: int) -> dict:
    with tempfile.TemporaryDirectory(prefix='sqlitedos-bench-') as workdir:
        built = run_step('build', workdir, str(n_dicts), str(n_chain), str(n_files))
        created = run_step('create', workdir)
        imported = run_step('import', workdir)
    return {**built, **created, **imported, 'create_rss_mib': created['rss_mib'], 'import_rss_mib': imported['rss_mib']}


def write_results(path: Path, runs: list[dict]) -> None:
    """The W6 medians as records for ``/work/shared/bench/report.py --extra`` (backend ``sqlitedos``)."""
    import platform
    import sqlite3

    records = []
    for key, metric in (('create_s', 'create_archive(all)'), ('import_s', 'import_archive(fresh profile)')):
        values = sorted(run[key] for run in runs)
        median = values[len(values) // 2]
        records.append(
            {
                'backend': 'sqlitedos',
                'workload': 'W6',
                'metric': metric,
                'n_ops': runs[0]['nodes'],
                'unit': 'nodes',
                'archive_bytes': runs[0]['archive_bytes'],
                'seconds': median,
                'ops_per_s': runs[0]['nodes'] / median,
                'runs': values,
            }
        )
    meta = {
        'tool': 'archive_memory.py',
        'python': platform.python_version(),
        'sqlite': sqlite3.sqlite_version,
        'reps': len(runs),
        'date': time.strftime('%Y-%m-%dT%H:%M:%S'),
    }
    path.write_text(json.dumps({'meta': meta, 'results': records}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--n', type=int, default=10000, help='nodes of the small archive (the big one has 10 n)')
    parser.add_argument('--w6', action='store_true', help='time W6 instead: ~24k nodes and 10k files')
    parser.add_argument('--reps', type=int, default=3, help='W6 repetitions (the median is reported)')
    parser.add_argument('--json', type=Path, help="with --w6: also write the results in report.py's format here")
    parser.add_argument('--step', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        name, workdir, *sizes = args.step
        steps = {'build': step_build, 'create': step_create, 'import': step_import}
        result = steps[name](Path(workdir), *map(int, sizes))
        result['rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.w6:
        runs = [measure(20000, 1000, 10000) for _ in range(args.reps)]
        for key in ('create_s', 'import_s'):
            values = sorted(run[key] for run in runs)
            print(f'W6 {key}: median {values[len(values) // 2]:.3f} s (runs: {", ".join(f"{v:.3f}" for v in values)})')
        print(f'W6 nodes {runs[0]["nodes"]}, archive {runs[0]["archive_bytes"] / 1e6:.1f} MB')
        if args.json:
            write_results(args.json, runs)
        return
    small = measure(args.n, 0, args.n // 4)
    big = measure(10 * args.n, 0, 10 * args.n // 4)
    for label, run in (('small', small), ('big', big)):
        print(
            f'{label}: {run["nodes"]} nodes, {args.n // 4 * (10 if label == "big" else 1)} files, '
            f'{run["archive_bytes"] / 1e6:.1f} MB archive; create {run["create_s"]:.2f} s, peak RSS '
            f'{run["create_rss_mib"]:.1f} MiB; import {run["import_s"]:.2f} s, peak RSS {run["import_rss_mib"]:.1f} MiB'
        )
    for step in ('import', 'create'):
        ratio = big[f'{step}_rss_mib'] / small[f'{step}_rss_mib']
        print(f'{step} peak RSS ratio big/small: {ratio:.2f} ({"PASS" if ratio <= 1.5 else "FAIL"}: limit 1.5)')


if __name__ == '__main__':
    main()
