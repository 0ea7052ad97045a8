"""Subprocess workers for the reliability tests (run as ``python reliability_workers.py MODE ...``; not collected).

Every write is a *pair*: a calculation node and a data node with two files, linked ``create``/``result``, stored in
one transaction. A worker logs a pair's data uuid only after the commit has returned, so the log lists exactly the
transactions that reported success.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlitedos import LinkType, QueryBuilder, SqliteDosStorage

DATA_TYPE = 'data.core.folder.FolderData.'
CALC_TYPE = 'process.calculation.calcfunction.CalcFunctionNode.'
DATA_LABEL = 'reliability-data'
CALC_LABEL = 'reliability-calc'
EMAIL = 'user@email.com'

#: One statement, so one snapshot: data nodes without their ``create`` link, and calculations without their output.
SELECT_HALF_PAIRS = """
SELECT
  (SELECT count(*) FROM db_dbnode AS n WHERE n.label = :data
     AND NOT EXISTS (SELECT 1 FROM db_dblink AS l WHERE l.output_id = n.id AND l.type = 'create')),
  (SELECT count(*) FROM db_dbnode AS n WHERE n.label = :calc
     AND NOT EXISTS (SELECT 1 FROM db_dblink AS l WHERE l.input_id = n.id AND l.type = 'create'))
"""


def open_storage(root: str) -> SqliteDosStorage:
    return SqliteDosStorage(SqliteDosStorage.create_profile('reliability', filepath=root, default_user_email=EMAIL))


def file_contents(uuid: str) -> dict[str, bytes]:
    """The files a pair's data node holds: derived from its uuid, so a reader can check them without the writer."""
    digest = hashlib.sha256(uuid.encode()).hexdigest()
    return {'own.txt': f'{uuid}\n'.encode() * 20, f'sub/{digest[:8]}.bin': digest.encode() * 50, 'shared.txt': b'same'}


def store_pair(storage: SqliteDosStorage, tag: str) -> str:
    """Store a calculation and its data output with files, in one transaction; return the data node's uuid."""
    user = storage.default_user
    data = storage.nodes.create(node_type=DATA_TYPE, user=user, label=DATA_LABEL, description=tag)
    for path, content in file_contents(data.uuid).items():
        data.repository.put_object_from_bytes(content, path)
    data.set_attribute('tag', tag)
    calc = storage.nodes.create(node_type=CALC_TYPE, user=user, label=CALC_LABEL, description=tag)
    calc.set_attribute('sealed', True)
    with storage.transaction():
        calc.store()
        data.store()
        data.add_incoming(calc, LinkType.CREATE, 'result')
    return data.uuid


def check_data_node(storage: SqliteDosStorage, uuid: str) -> list[str]:
    """What is wrong with the stored pair of data node ``uuid`` (empty list: nothing)."""
    node = storage.nodes.get(uuid=uuid)
    problems = []
    incoming = node.get_incoming(LinkType.CREATE)
    if [(link.link_label, link.node.label) for link in incoming] != [('result', CALC_LABEL)]:
        problems.append(f'{uuid}: create link missing or wrong: {incoming}')
    for path, content in file_contents(uuid).items():
        if node.repository.get_object_content(path, 'rb') != content:
            problems.append(f'{uuid}: file {path} differs')
    return problems


def half_pairs(storage: SqliteDosStorage) -> tuple[int, int]:
    return storage.get_session().execute(SELECT_HALF_PAIRS, {'data': DATA_LABEL, 'calc': CALC_LABEL}).fetchone()


def append_line(log: Any, line: str, sync: bool) -> None:
    log.write(line + '\n')
    log.flush()
    if sync:
        os.fsync(log.fileno())


# --- concurrency workers -----------------------------------------------------------------------------------------


def run_writer(root: str, seconds: float, result: str, name: str) -> None:
    """Store pairs until the deadline; log every committed uuid, and every error as ``error <text>``."""
    deadline = time.monotonic() + seconds
    storage = open_storage(root)
    with open(result, 'a', encoding='utf-8') as log:
        count = 0
        while time.monotonic() < deadline:
            try:
                uuid = store_pair(storage, f'{name}-{count}')
            except Exception:  # noqa: BLE001 - every failure is the finding
                append_line(log, 'error ' + traceback.format_exc().replace('\n', ' | '), False)
                continue
            append_line(log, f'ok {uuid}', False)
            count += 1
    storage.close()


def run_reader(root: str, seconds: float, result: str, name: str) -> None:
    """Query and read files until the deadline; log ``reads N`` at the end, and every problem seen."""
    deadline = time.monotonic() + seconds
    storage = open_storage(root)
    rng = random.Random(name)
    reads = 0
    with open(result, 'a', encoding='utf-8') as log:
        while time.monotonic() < deadline:
            try:
                problems = read_once(storage, rng)
            except Exception:  # noqa: BLE001
                problems = ['error ' + traceback.format_exc().replace('\n', ' | ')]
            for problem in problems:
                append_line(log, f'problem {problem}', False)
            reads += 1
        append_line(log, f'reads {reads}', False)
    storage.close()


def read_once(storage: SqliteDosStorage, rng: random.Random) -> list[str]:
    problems = []
    data_missing_link, calc_missing_link = half_pairs(storage)
    if data_missing_link or calc_missing_link:
        problems.append(f'half pairs visible: {data_missing_link} data, {calc_missing_link} calculations')
    qb = QueryBuilder(backend=storage)
    qb.append(entity_type=CALC_TYPE, orm_base='node', tag='calc', filters={'label': CALC_LABEL})
    qb.append(
        entity_type=DATA_TYPE,
        orm_base='node',
        tag='data',
        with_incoming='calc',
        project=['uuid'],
        filters={'label': DATA_LABEL},
    )
    qb.order_by({'data': {'id': 'desc'}}).limit(50)
    uuids = [row[0] for row in qb.all()]
    for uuid in rng.sample(uuids, min(3, len(uuids))):
        problems.extend(check_data_node(storage, uuid))
    count = storage.query().count(
        {
            'path': [{'entity_type': DATA_TYPE, 'orm_base': 'node', 'tag': 'd'}],
            'filters': {'d': {'label': DATA_LABEL}},
            'project': {'d': [{'id': {}}]},
        }
    )
    if count < len(uuids):
        problems.append(f'count {count} below the {len(uuids)} rows just seen')
    return problems


# --- crash workers -----------------------------------------------------------------------------------------------


def run_crash_writer(root: str, log_path: str, mode: str, archive: str | None) -> None:
    """Write pairs forever (``write``), or with live packing between batches (``maintain``), or import (``import``)."""
    storage = open_storage(root)
    print('ready', flush=True)
    if mode == 'import':
        from sqlitedos.archive import import_archive

        print('import', flush=True)
        import_archive(storage, archive)
        print('imported', flush=True)
        time.sleep(60)
        return
    with open(log_path, 'a', encoding='utf-8') as log:
        count = 0
        while True:
            uuid = store_pair(storage, f'crash-{count}')
            append_line(log, uuid, True)  # only after the commit has returned
            count += 1
            if mode == 'maintain' and count % 5 == 0:
                print('maintain', flush=True)
                storage.maintain()
                print('maintained', flush=True)


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == 'writer':
        run_writer(args[0], float(args[1]), args[2], args[3])
    elif mode == 'reader':
        run_reader(args[0], float(args[1]), args[2], args[3])
    elif mode in ('write', 'maintain', 'import'):
        run_crash_writer(args[0], args[1], mode, args[2] if len(args) > 2 else None)
    else:
        raise SystemExit(f'unknown mode {mode!r}')


if __name__ == '__main__':
    try:
        main(sys.argv[1:])
    except sqlite3.Error:
        traceback.print_exc()
        raise SystemExit(3) from None
