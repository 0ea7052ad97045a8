"""The raw limits of the workloads: stdlib sqlite3 on aiida's schema and disk-objectstore called directly.

Adapted from the shared ``raw_limits.py`` so that ``run.py`` measures them in the same run as sqlitedos. The SQLite
tables are aiida-core 2.9.4's own DDL, read from the project's ``schema/main_*.sql`` (all indexes and foreign keys),
so index maintenance costs the same as in sqlitedos. Connection setups:

- ``wal``:    journal_mode=WAL, synchronous=NORMAL, foreign_keys=ON, case_sensitive_like=ON (sqlitedos' setup);
- ``memory``: ``:memory:`` with the same pragmas (the counterpart of ``SqliteTempBackend``);
- ``aiida``:  rollback journal, synchronous=FULL (what aiida-core runs with; only with ``--raw-aiida-mode``).
"""

from __future__ import annotations

import datetime
import io
import json
import re
import shutil
import sqlite3
import time
import uuid
import zipfile
from pathlib import Path

import workloads as wl

SCHEMA_DIR = Path(__file__).resolve().parent.parent / 'schema'


def schema_sql() -> str:
    """aiida-core 2.9.4's sqlite_dos DDL: the project's ``schema/main_*.sql`` files, in revision order."""
    return '\n'.join(path.read_text() for path in sorted(SCHEMA_DIR.glob('main_*.sql')))


NODE_COLUMNS = (
    'uuid, node_type, process_type, label, description, ctime, mtime, attributes, extras, repository_metadata, '
    'dbcomputer_id, user_id'
)
INSERT_NODE = f'INSERT INTO db_dbnode ({NODE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)'
INSERT_LINK = 'INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (?,?,?,?)'
SEAL = "UPDATE db_dbnode SET attributes = json_set(attributes, '$.sealed', json('true')), mtime = ? WHERE id = ?"
DESCENDANTS = (
    'WITH RECURSIVE d(id) AS (SELECT ? UNION SELECT l.output_id FROM db_dblink l JOIN d ON l.input_id = d.id '
    "WHERE l.type IN ('create', 'input_calc')) INSERT INTO del_ids SELECT id FROM d"
)


def connect(mode: str, path: Path | None) -> sqlite3.Connection:
    conn = sqlite3.connect(':memory:' if mode == 'memory' else str(path), isolation_level=None)
    if mode == 'wal':
        conn.execute('PRAGMA journal_mode=WAL')
        conn.execute('PRAGMA synchronous=NORMAL')
    elif mode == 'aiida':
        conn.execute('PRAGMA journal_mode=DELETE')
        conn.execute('PRAGMA synchronous=FULL')
    conn.execute('PRAGMA foreign_keys=ON')
    conn.execute('PRAGMA case_sensitive_like=ON')
    return conn


def new_db(mode: str, workdir: Path, name: str) -> sqlite3.Connection:
    path = workdir / f'{name}.sqlite'
    for suffix in ('', '-wal', '-shm', '-journal'):
        Path(f'{path}{suffix}').unlink(missing_ok=True)
    conn = connect(mode, path)
    conn.executescript(schema_sql())
    conn.execute("INSERT INTO db_dbuser VALUES (1, 'aiida@localhost', '', '', '')")
    return conn


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(' ')


def dict_row(i: int, node_uuid: str, ts: str) -> tuple:
    attributes = json.dumps(wl.dict_attributes(i))
    return (node_uuid, wl.DICT_NODE_TYPE, None, '', '', ts, ts, attributes, '{}', '{}', None, 1)


def simple_row(node_type: str, attributes: dict, ts: str, repository_metadata: dict | None = None) -> tuple:
    metadata = json.dumps(repository_metadata or {})
    return (str(uuid.uuid4()), node_type, None, '', '', ts, ts, json.dumps(attributes), '{}', metadata, None, 1)


# ---------------------------------------------------------------------------------------------------------- inserts


def r_bulk_insert(rec: wl.Recorder, n: int, mode: str, workdir: Path) -> None:
    """W2 counterpart: N rows with executemany in one transaction (JSON encoding timed)."""
    conn = new_db(mode, workdir, 'bulk')
    uuids = [str(uuid.uuid4()) for _ in range(n)]
    t0 = time.perf_counter()
    ts = now_iso()
    rows = [dict_row(i, uuids[i], ts) for i in range(n)]
    conn.execute('BEGIN')
    conn.executemany(INSERT_NODE, rows)
    conn.execute('COMMIT')
    rec.add(f'raw-sqlite3-{mode}', 'W2', 'executemany_one_txn', n, 'nodes', time.perf_counter() - t0)
    assert conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0] == n
    conn.close()


def r_per_row(rec: wl.Recorder, n: int, mode: str, workdir: Path) -> None:
    """W1 counterpart: N rows, one transaction each."""
    conn = new_db(mode, workdir, 'perrow')
    uuids = [str(uuid.uuid4()) for _ in range(n)]
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute('BEGIN')
        conn.execute(INSERT_NODE, dict_row(i, uuids[i], now_iso()))
        conn.execute('COMMIT')
    rec.add(f'raw-sqlite3-{mode}', 'W1', 'insert_one_txn_per_row', n, 'nodes', time.perf_counter() - t0)
    assert conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0] == n
    conn.close()


def insert_chain(conn: sqlite3.Connection, n_calcs: int) -> int:
    """The W3 chain with aiida's write pattern: one transaction per node store, then one for the seal update."""

    def store(row: tuple, links: list[tuple] = ()) -> int:
        conn.execute('BEGIN')
        pk = conn.execute(INSERT_NODE, row).lastrowid
        for source, label, link_type in links:
            conn.execute(INSERT_LINK, (source, pk, label, link_type))
        conn.execute('COMMIT')
        return pk

    prev = root = store(simple_row(wl.INT_NODE_TYPE, {'value': 0}, now_iso()))
    for k in range(n_calcs):
        extra = store(simple_row(wl.INT_NODE_TYPE, {'value': k}, now_iso()))
        calc_row = simple_row(wl.CALC_NODE_TYPE, {}, now_iso())
        calc = store(calc_row, [(prev, 'x', 'input_calc'), (extra, 'y', 'input_calc')])
        out = store(simple_row(wl.INT_NODE_TYPE, {'value': k + 1}, now_iso()), [(calc, 'result', 'create')])
        conn.execute('BEGIN')
        conn.execute(SEAL, (now_iso(), calc))
        conn.execute('COMMIT')
        prev = out
    return root


def r_chain(rec: wl.Recorder, n: int, mode: str, workdir: Path) -> None:
    """W3 counterpart: the chain, one transaction per node store plus the seal update (no link validation)."""
    conn = new_db(mode, workdir, 'chain')
    n_calcs = wl.chain_shape(n)
    t0 = time.perf_counter()
    insert_chain(conn, n_calcs)
    rec.add(f'raw-sqlite3-{mode}', 'W3', 'chain_calcs', n_calcs, 'calcs', time.perf_counter() - t0)
    assert conn.execute('SELECT count(*) FROM db_dblink').fetchone()[0] == 3 * n_calcs
    conn.close()


# ---------------------------------------------------------------------------------------------------------- queries


def build_query_db(n: int, workdir: Path) -> tuple[sqlite3.Connection, int, list[int], list[int]]:
    """2N Dict rows (W1 + W2 data) and the W3 chain, in WAL mode; returns (conn, root pk, W1 pks, W2 pks)."""
    conn = new_db('wal', workdir, 'query')
    ts = now_iso()
    for _copy in range(2):
        conn.execute('BEGIN')
        conn.executemany(INSERT_NODE, [dict_row(i, str(uuid.uuid4()), ts) for i in range(n)])
        conn.execute('COMMIT')
    pks = [r[0] for r in conn.execute('SELECT id FROM db_dbnode ORDER BY id')]
    root = insert_chain(conn, wl.chain_shape(n))
    conn.execute('ANALYZE')
    return conn, root, pks[:n], pks[n:]


def raw_queries(n: int, root: int) -> dict[str, tuple[str, tuple, str]]:
    """Natural SQL for each W4 query: name -> (sql, params, how rows are consumed)."""
    dict_like = "node_type LIKE 'data.core.dict.%'"
    return {
        'a_count_dict': (f'SELECT count(*) FROM db_dbnode WHERE {dict_like}', (), 'scalar'),
        'b_nested_x_eq_3': (
            f"SELECT id FROM db_dbnode WHERE {dict_like} AND json_extract(attributes, '$.nested.x') = 3",
            (),
            'rows',
        ),
        'c_i_gt_half_desc_limit100': (
            (
                f"SELECT id FROM db_dbnode WHERE {dict_like} AND json_extract(attributes, '$.i') > ? "
                'ORDER BY id DESC LIMIT 100'
            ),
            (n // 2,),
            'rows',
        ),
        'd_like_project_name': (
            "SELECT json_extract(attributes, '$.name') FROM db_dbnode WHERE node_type LIKE 'data.core.dict%'",
            (),
            'rows',
        ),
        'e1_calc_and_output_of_data': (
            (
                'SELECT c.id, o.id FROM db_dblink l1 JOIN db_dbnode c ON c.id = l1.output_id '
                'JOIN db_dblink l2 ON l2.input_id = c.id JOIN db_dbnode o ON o.id = l2.output_id '
                "WHERE l1.input_id = ? AND c.node_type LIKE 'process.calculation.%' AND o.node_type LIKE 'data.%'"
            ),
            (root,),
            'rows',
        ),
        'e2_all_calc_outputs': (
            (
                'SELECT c.id, o.id FROM db_dbnode c JOIN db_dblink l ON l.input_id = c.id '
                "JOIN db_dbnode o ON o.id = l.output_id WHERE c.node_type LIKE 'process.calculation.%' "
                "AND o.node_type LIKE 'data.%'"
            ),
            (),
            'rows',
        ),
        'e3_all_calc_inputs': (
            (
                'SELECT c.id, i.id FROM db_dbnode c JOIN db_dblink l ON l.output_id = c.id '
                "JOIN db_dbnode i ON i.id = l.input_id WHERE c.node_type LIKE 'process.calculation.%' "
                "AND i.node_type LIKE 'data.%'"
            ),
            (),
            'rows',
        ),
        'f_descendants_of_root': (
            (
                'WITH RECURSIVE d(id) AS (SELECT output_id FROM db_dblink WHERE input_id = ? AND type IN '
                "('create', 'input_calc') UNION SELECT l.output_id FROM db_dblink l JOIN d ON l.input_id = d.id "
                "WHERE l.type IN ('create', 'input_calc')) SELECT id FROM d"
            ),
            (root,),
            'rows',
        ),
        'g_project_star_1000': (f'SELECT * FROM db_dbnode WHERE {dict_like} LIMIT 1000', (), 'decode'),
    }


def without_node_type_index(sql: str) -> str:
    """The same SQL with the node_type index made unusable (unary ``+`` on each ``node_type LIKE``)."""
    return re.sub(r'([\w.]*node_type) LIKE', r'+\1 LIKE', sql)


def without_bloom_filter(sql: str) -> str:
    """The same recursive SQL with SQLite's bloom filter over the link table ruled out: the recursive step's type
    filter gets ``OR <cte>.id IS NULL`` (never true), so it no longer depends on the link table alone. SQLite 3.38+
    otherwise scans every link to build the filter before the first step (64 ms at 1M links, however few are reached).
    """
    return re.sub(
        r'JOIN (\w+) ON (l\.\w+ = \1\.id) WHERE (l\.type IN \([^)]*\))',
        r'JOIN \1 ON \2 WHERE (\3 OR \1.id IS NULL)',
        sql,
    )


def run_raw_query(conn: sqlite3.Connection, sql: str, params: tuple, how: str) -> list:
    """Execute one W4 raw query and consume it as a client would; returns the rows (a 1-list for scalars)."""
    cur = conn.execute(sql, params)
    if how == 'scalar':
        return [cur.fetchone()[0]]
    rows = cur.fetchall()
    if how == 'decode':  # materialise like '*': decode the JSON columns of each row
        rows = [(r, json.loads(r[8]), json.loads(r[9]), json.loads(r[10])) for r in rows]
    return rows


def r_queries(rec: wl.Recorder, n: int, conn: sqlite3.Connection, root: int) -> None:
    """W4 counterparts: natural SQL and its hand-tuned forms (no node_type index, no bloom filter); the best is
    ``[best]``."""
    expected = wl.expected_rows(n)
    best: dict[str, tuple[float, str]] = {}
    for name, (sql, params, how) in raw_queries(n, root).items():
        variants = {name: sql}
        if 'node_type LIKE' in sql:
            # the same query with the node_type index made unusable (unary +): SQLite's planner picks that index
            # even where a scan in rowid order is much faster (e.g. ORDER BY id DESC LIMIT 100)
            variants[f'{name}[no node_type index]'] = without_node_type_index(sql)
        if 'WITH RECURSIVE' in sql:
            variants[f'{name}[no bloom filter]'] = without_bloom_filter(sql)
        for label, query in variants.items():
            med, runs, rows = wl.time_repeated(lambda q=query, p=params, h=how: run_raw_query(conn, q, p, h))
            got = rows[0] if how == 'scalar' else len(rows)
            if got != expected[name]:
                raise AssertionError(f'raw W4 {label}: {got} rows, expected {expected[name]}')
            rec.add('raw-sqlite3-wal', 'W4', label, 1, 'queries', med, rows=got, inner_runs=runs)
            if name not in best or med < best[name][0]:
                best[name] = (med, label)
    for name, (med, label) in best.items():
        rec.add('raw-sqlite3-wal', 'W4', f'{name}[best]', 1, 'queries', med, variant=label)


def r_delete(rec: wl.Recorder, n: int, conn: sqlite3.Connection, root: int, w1_pks: list[int]) -> None:
    """W7 counterparts: delete N/2 nodes (+ links) in one transaction; cascade-delete the chain by its root."""
    half = w1_pks[::2]
    t0 = time.perf_counter()
    conn.execute('BEGIN')
    conn.execute('CREATE TEMP TABLE IF NOT EXISTS del_ids (id INTEGER PRIMARY KEY)')
    conn.execute('DELETE FROM del_ids')
    conn.executemany('INSERT INTO del_ids VALUES (?)', ((pk,) for pk in half))
    conn.execute('DELETE FROM db_dblink WHERE input_id IN del_ids OR output_id IN del_ids')
    conn.execute('DELETE FROM db_dbnode WHERE id IN del_ids')
    conn.execute('COMMIT')
    rec.add('raw-sqlite3-wal', 'W7', 'delete_ids_one_txn', len(half), 'nodes', time.perf_counter() - t0)

    t0 = time.perf_counter()
    conn.execute('BEGIN')
    conn.execute('DELETE FROM del_ids')
    conn.execute(DESCENDANTS, (root,))
    count = conn.execute('SELECT count(*) FROM del_ids').fetchone()[0]
    conn.execute('DELETE FROM db_dblink WHERE input_id IN del_ids OR output_id IN del_ids')
    conn.execute('DELETE FROM db_dbnode WHERE id IN del_ids')
    conn.execute('COMMIT')
    rec.add('raw-sqlite3-wal', 'W7', 'delete_cascade_from_root_one_txn', count, 'nodes', time.perf_counter() - t0)
    assert count == 1 + 2 * wl.chain_shape(n), count


# ------------------------------------------------------------------------------------------------------ repository


def fresh_container(workdir: Path, name: str):
    from disk_objectstore import Container

    path = workdir / name
    shutil.rmtree(path, ignore_errors=True)
    container = Container(str(path))
    container.init_container(clear=True)
    return container


def r_objectstore(rec: wl.Recorder, n: int, workdir: Path):
    """W5 counterparts: loose writes one by one, reads back one by one (container kept open) and in bulk, packing."""
    backend = 'raw-disk-objectstore'
    payloads = [wl.payload('w5direct', i) for i in range(n)]
    size = n * wl.PAYLOAD_SIZE

    c = fresh_container(workdir, 'dos-loose')
    t0 = time.perf_counter()
    hashes = [c.add_streamed_object(io.BytesIO(p)) for p in payloads]
    rec.add(backend, 'W5', 'add_streamed_object(loose, one by one)', n, 'objects', time.perf_counter() - t0)

    def read_each(container) -> None:
        got = sum(len(container.get_object_content(h)) for h in hashes)
        assert got == size

    def read_bulk(container) -> None:
        got = container.get_objects_content(hashes)
        assert len(got) == n and sum(map(len, got.values())) == size

    for label, fn in [
        ('get_object_content(loose, one by one)', lambda: read_each(c)),
        ('get_objects_content(loose, bulk)', lambda: read_bulk(c)),
    ]:
        dt, _ = wl.time_call(fn)
        rec.add(backend, 'W5', label, n, 'objects', dt)

    t0 = time.perf_counter()
    c.pack_all_loose(clean_loose_per_pack=True)
    rec.add(backend, 'W5', 'pack_all_loose', n, 'objects', time.perf_counter() - t0)
    t0 = time.perf_counter()
    c.repack()
    c.clean_storage(vacuum=True)
    rec.add(backend, 'W5', 'repack+clean_storage(vacuum)', n, 'objects', time.perf_counter() - t0)
    assert c.count_objects().loose == 0

    for label, fn in [
        ('get_object_content(packed, one by one)', lambda: read_each(c)),
        ('get_objects_content(packed, bulk)', lambda: read_bulk(c)),
    ]:
        dt, _ = wl.time_call(fn)
        rec.add(backend, 'W5', label, n, 'objects', dt)
    c.close()

    c = fresh_container(workdir, 'dos-pack-streams')
    t0 = time.perf_counter()
    c.add_streamed_objects_to_pack([io.BytesIO(p) for p in payloads])
    rec.add(backend, 'W5', 'add_streamed_objects_to_pack(one call)', n, 'objects', time.perf_counter() - t0)
    return c


# --------------------------------------------------------------------------------------------------------- archive


def add_folder_nodes(conn: sqlite3.Connection, container, n: int) -> None:
    """N // FILES_PER_NODE FolderData rows referencing the container's objects (so the archive is W6-sized)."""
    hashes = sorted(container.list_all_objects())
    per = wl.FILES_PER_NODE
    ts = now_iso()
    rows = []
    for j in range(0, len(hashes), per):
        meta = {'o': {f'f{f}.bin': {'k': h} for f, h in enumerate(hashes[j : j + per])}}
        rows.append(simple_row(wl.FOLDER_NODE_TYPE, {}, ts, meta))
    conn.execute('BEGIN')
    conn.executemany(INSERT_NODE, rows)
    conn.execute('COMMIT')


def r_archive(rec: wl.Recorder, conn: sqlite3.Connection, container, workdir: Path) -> None:
    """W6 floor: zip (deflate 6) of a copy of the tables plus all objects; import = unzip + insert-select + pack.

    Not aiida's format in every detail (no metadata checks, no uuid merging); it is the I/O + compression floor.
    """
    hashes = list(container.list_all_objects())
    n_nodes = conn.execute('SELECT count(*) FROM db_dbnode').fetchone()[0]
    archive = workdir / 'raw-export.zip'
    dbcopy = workdir / 'archive-db.sqlite3'
    for path in (archive, dbcopy):
        path.unlink(missing_ok=True)

    t0 = time.perf_counter()
    conn.execute('VACUUM INTO ?', (str(dbcopy),))
    with zipfile.ZipFile(archive, 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr('metadata.json', json.dumps({'export_version': 'main_0001', 'nodes': n_nodes}))
        zf.write(dbcopy, 'db.sqlite3')
        with container.get_objects_stream_and_meta(hashes) as triplets:
            for key, stream, _meta in triplets:
                zf.writestr(f'repo/{key}', stream.read())
    rec.add(
        'raw-sqlite3+dos',
        'W6',
        'export_zip(db copy + objects)',
        n_nodes,
        'nodes',
        time.perf_counter() - t0,
        archive_bytes=archive.stat().st_size,
        objects=len(hashes),
    )

    target = new_db('wal', workdir, 'import-target')
    target_container = fresh_container(workdir, 'dos-import-target')
    extracted = workdir / 'extracted-db.sqlite3'
    t0 = time.perf_counter()
    with zipfile.ZipFile(archive) as zf:
        with zf.open('db.sqlite3') as src, open(extracted, 'wb') as dst:
            shutil.copyfileobj(src, dst)
        names = [name for name in zf.namelist() if name.startswith('repo/')]
        target_container.add_objects_to_pack([zf.read(name) for name in names])
    target.execute('ATTACH DATABASE ? AS src', (str(extracted),))
    target.execute('BEGIN')
    target.execute(f'INSERT INTO db_dbnode ({NODE_COLUMNS}) SELECT {NODE_COLUMNS} FROM src.db_dbnode')
    target.execute(
        'INSERT INTO db_dblink (input_id, output_id, label, type) '
        'SELECT n_in.id, n_out.id, l.label, l.type FROM src.db_dblink l '
        'JOIN src.db_dbnode s_in ON s_in.id = l.input_id JOIN db_dbnode n_in ON n_in.uuid = s_in.uuid '
        'JOIN src.db_dbnode s_out ON s_out.id = l.output_id JOIN db_dbnode n_out ON n_out.uuid = s_out.uuid'
    )
    target.execute('COMMIT')
    dt = time.perf_counter() - t0
    imported = target.execute('SELECT count(*) FROM db_dbnode').fetchone()[0]
    rec.add(
        'raw-sqlite3+dos',
        'W6',
        'import_zip(insert-select + add_objects_to_pack)',
        n_nodes,
        'nodes',
        dt,
        imported_nodes=imported,
    )
    assert imported == n_nodes
    target.close()
    target_container.close()


# ------------------------------------------------------------------------------------------------------------ run


def run(rec: wl.Recorder, n: int, wanted: set[str], workdir: Path, aiida_mode: bool = False) -> None:
    """One repetition of every raw counterpart the ``wanted`` workloads need."""
    modes = ('wal', 'memory') + (('aiida',) if aiida_mode else ())
    for workload, fn in (('W2', r_bulk_insert), ('W1', r_per_row), ('W3', r_chain)):
        if workload in wanted:
            for mode in modes:
                fn(rec, n, mode, workdir)
    container = None
    if wanted & {'W5', 'W6'}:
        wl.settle_disk()
        container = r_objectstore(rec, n, workdir)
    if wanted & {'W4', 'W6', 'W7'}:
        conn, root, w1_pks, _w2_pks = build_query_db(n, workdir)
        if 'W4' in wanted:
            r_queries(rec, n, conn, root)
        if 'W6' in wanted:
            add_folder_nodes(conn, container, n)
            r_archive(rec, conn, container, workdir)
        if 'W7' in wanted:
            r_delete(rec, n, conn, root, w1_pks)
        conn.close()
    if container is not None:
        container.close()
