"""``verify``: passes on clean storages, finds each fault injected on purpose, repairs only unreferenced objects."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from sqlitedos.db import encode_datetime, now
from sqlitedos.verify import Problem, VerifyReport, iter_file_keys, verify

INSERT_NODE = """
    INSERT INTO db_dbnode (uuid, node_type, process_type, label, description, ctime, mtime, attributes, extras,
                           repository_metadata, user_id)
    VALUES (?, ?, NULL, ?, '', ?, ?, '{}', '{}', ?, ?) RETURNING id
"""
INSERT_LINK = 'INSERT INTO db_dblink (input_id, output_id, label, type) VALUES (?, ?, ?, ?)'


def add_node(
    storage: Any, node_type: str = 'data.core.int.Int.', files: dict[str, bytes] | None = None, label: str = ''
) -> int:
    """Insert a node row by SQL (files put into the container first, as a store does); return its id."""
    tree: dict[str, Any] = {}
    if files:
        container = storage.get_container()
        try:
            tree = {'o': {name: {'k': container.add_object(content)} for name, content in files.items()}}
        finally:
            container.close()
    stamp = encode_datetime(now())
    with storage.transaction() as connection:
        user = connection.execute('SELECT id FROM db_dbuser ORDER BY id LIMIT 1').fetchone()[0]
        row = connection.execute(
            INSERT_NODE, (str(uuid.uuid4()), node_type, label, stamp, stamp, json.dumps(tree), user)
        )
        return row.fetchone()[0]


def add_link(storage: Any, source: int, target: int, link_type: str, label: str) -> None:
    with storage.transaction() as connection:
        connection.execute(INSERT_LINK, (source, target, label, link_type))


def small_graph(storage: Any) -> dict[str, int]:
    """x -> calc -> y, with files on each node; returns the node ids."""
    x = add_node(storage, files={'a.txt': b'input', 'b.txt': b'shared'})
    calc = add_node(storage, 'process.calculation.calcjob.CalcJobNode.', files={'in.txt': b'calc input'})
    y = add_node(storage, files={'out.txt': b'result', 'same.txt': b'shared'})
    add_link(storage, x, calc, 'input_calc', 'x')
    add_link(storage, calc, y, 'create', 'result')
    return {'x': x, 'calc': calc, 'y': y}


def loose_path(storage: Any, key: str) -> Path:
    return Path(storage.filepath_container) / 'loose' / key[:2] / key[2:]


def node_key(storage: Any, node_id: int, name: str) -> str:
    cell = storage.get_session().execute('SELECT repository_metadata FROM db_dbnode WHERE id = ?', (node_id,))
    return json.loads(cell.fetchone()[0])['o'][name]['k']


def pack_objects(storage: Any, compress: bool = False) -> None:
    """Pack the loose objects (compressed or not) and drop the loose copies."""
    container = storage.get_container()
    try:
        container.pack_all_loose(compress=compress)
        container.clean_storage()
    finally:
        container.close()


def kinds(report: VerifyReport) -> set[str]:
    return {problem.kind for problem in report.problems}


def raw_write(storage: Any, sql: str, params: tuple = ()) -> None:
    """Write behind the storage's back with foreign keys off, as a buggy tool would."""
    connection = sqlite3.connect(storage.filepath_database, isolation_level=None)
    try:
        connection.execute('PRAGMA foreign_keys = OFF')
        connection.execute(sql, params)
    finally:
        connection.close()


def test_clean_storage_passes(dos_storage: Any) -> None:
    small_graph(dos_storage)
    report = verify(dos_storage)
    assert report.ok, report.render()
    assert report.problems == [] and report.unreferenced == []
    assert report.counts['links'] == 2
    assert report.counts['referenced objects'] == 4  # 'shared' is stored once
    assert 'OK' in report.render()


def test_empty_storage_passes(dos_storage: Any) -> None:
    assert verify(dos_storage).ok


def test_fixture_profile_passes(fixture_storage: Any, manifest: dict) -> None:
    report = verify(fixture_storage)
    assert report.ok, report.render()
    assert report.counts['links'] > 0 and report.counts['referenced objects'] > 0


def test_fixture_profile_by_path(fixture_profile_path: Path) -> None:
    assert verify(fixture_profile_path).ok
    assert verify(str(fixture_profile_path)).ok


def test_deleted_object(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    key = node_key(dos_storage, ids['y'], 'out.txt')
    loose_path(dos_storage, key).unlink()
    report = verify(dos_storage)
    assert not report.ok
    assert kinds(report) == {'missing_object'}
    assert key in report.problems[0].detail and f'node {ids["y"]}' in report.problems[0].detail


def test_corrupted_object(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    key = node_key(dos_storage, ids['x'], 'a.txt')
    loose_path(dos_storage, key).write_bytes(b'tampered')
    report = verify(dos_storage)
    assert kinds(report) == {'corrupt_object'}
    assert key in report.problems[0].detail


def test_corrupted_packed_object(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    key = node_key(dos_storage, ids['y'], 'out.txt')
    pack_objects(dos_storage)
    assert verify(dos_storage).ok
    pack = Path(dos_storage.filepath_container) / 'packs' / '0'
    content = pack.read_bytes()
    assert content.count(b'result') == 1
    pack.write_bytes(content.replace(b'result', b'RESULT'))
    report = verify(dos_storage)
    assert kinds(report) == {'corrupt_object'} and key in report.problems[0].detail


def test_dangling_link(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    raw_write(dos_storage, INSERT_LINK, (ids['calc'], 9999, 'ghost', 'create'))
    report = verify(dos_storage)
    assert kinds(report) == {'dangling_link'}
    assert 'node 9999 does not exist' in report.problems[0].detail


def test_wrong_repository_uuid(dos_storage: Any) -> None:
    small_graph(dos_storage)
    raw_write(
        dos_storage,
        'UPDATE db_dbsetting SET val = ? WHERE "key" = ?',
        (json.dumps(uuid.uuid4().hex), 'repository|uuid'),
    )
    report = verify(dos_storage)
    assert kinds(report) == {'repository_uuid'}
    # A folder that no longer opens as a storage can still be examined by path.
    assert kinds(verify(dos_storage.filepath_root)) == {'repository_uuid'}


def test_wrong_schema_version(dos_storage: Any) -> None:
    raw_write(dos_storage, 'UPDATE alembic_version SET version_num = ?', ('main_0001',))
    assert kinds(verify(dos_storage)) == {'schema_version'}


@pytest.mark.parametrize(
    ('source', 'target', 'link_type'),
    [
        ('y', 'calc', 'create'),  # create must go from a calculation to data
        ('calc', 'x', 'input_calc'),  # input links go from data into a process
        ('x', 'y', 'input_calc'),  # ... into a calculation, not into data
        ('x', 'calc', 'input_work'),  # input_work goes into a workflow
        ('calc', 'calc', 'call_calc'),  # a call comes from a workflow (and a node cannot link to itself)
    ],
)
def test_link_rule_violations(dos_storage: Any, source: str, target: str, link_type: str) -> None:
    ids = small_graph(dos_storage)
    add_link(dos_storage, ids[source], ids[target], link_type, 'bad')
    report = verify(dos_storage)
    assert kinds(report) == {'link_rule'}, report.render()


KIND_NODE_TYPES = {
    'data': 'data.core.int.Int.',
    'calculation': 'process.calculation.calcfunction.CalcFunctionNode.',
    'workflow': 'process.workflow.workfunction.WorkFunctionNode.',
}


def test_every_link_type_is_checked_at_both_ends(dos_storage: Any) -> None:
    """Each link type between each pair of node kinds: flagged exactly when LINK_RULES does not allow it."""
    from sqlitedos.links import LINK_RULES

    expected = set()
    for link, rule in LINK_RULES.items():
        for source_kind, source_type in KIND_NODE_TYPES.items():
            for target_kind, target_type in KIND_NODE_TYPES.items():
                source, target = add_node(dos_storage, source_type), add_node(dos_storage, target_type)
                add_link(dos_storage, source, target, link.value, 'label')
                if (source_kind, target_kind) != (rule.source, rule.target):
                    expected.add((link.value, source, target))
    assert len(expected) == 8 * len(LINK_RULES)
    report = verify(dos_storage)
    found = set()
    for problem in report.problems:
        assert problem.kind == 'link_rule' and 'must join' in problem.detail, problem
        match = re.match(r"link \d+ \((\w+) 'label' from node (\d+) to node (\d+)\)", problem.detail)
        assert match, problem.detail
        found.add((match[1], int(match[2]), int(match[3])))
    assert found == expected


def test_bad_link_label(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    raw_write(dos_storage, 'UPDATE db_dblink SET label = ? WHERE output_id = ?', ('_private', ids['y']))
    report = verify(dos_storage)
    assert kinds(report) == {'link_rule'} and 'underscore' in report.problems[0].detail


def test_link_degree_violation(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    other_calc = add_node(dos_storage, 'process.calculation.calcjob.CalcJobNode.')
    add_link(dos_storage, other_calc, ids['y'], 'create', 'result')  # y would have two creators
    report = verify(dos_storage)
    assert kinds(report) == {'link_rule'}
    assert 'unique at the in end' in report.problems[0].detail


def test_unreferenced_objects_listed_and_repaired(dos_storage: Any) -> None:
    small_graph(dos_storage)
    container = dos_storage.get_container()
    try:
        junk = [container.add_object(b'junk one'), *container.add_objects_to_pack([b'junk two'])]
    finally:
        container.close()
    report = verify(dos_storage)
    assert report.ok  # unreferenced objects are not a fault
    assert report.unreferenced == sorted(junk) and report.repaired == []
    assert '2 unreferenced object(s)' in report.render()
    repaired = verify(dos_storage, repair=True)
    assert repaired.repaired == sorted(junk)
    assert 'deleted 2 unreferenced' in repaired.render()
    after = verify(dos_storage)
    assert after.ok and after.unreferenced == [] and after.counts['container objects'] == 4


def test_repair_leaves_faults_alone(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    key = node_key(dos_storage, ids['y'], 'out.txt')
    loose_path(dos_storage, key).unlink()
    report = verify(dos_storage, repair=True)
    assert kinds(report) == {'missing_object'} and report.repaired == []


def test_progress_callback(dos_storage: Any) -> None:
    small_graph(dos_storage)
    calls: list[tuple[str, int, int]] = []
    verify(dos_storage, progress=lambda *args: calls.append(args))
    assert calls[-1] == ('Checking objects', 4, 4)


def test_report_helpers() -> None:
    report = VerifyReport('/x', problems=[Problem('missing_object', 'object k')])
    assert not report.ok
    assert report.as_dict()['problems'] == [{'kind': 'missing_object', 'detail': 'object k'}]
    assert '[missing_object] object k' in str(report)
    tree = {'o': {'a': {'k': 'k1'}, 'd': {'o': {'b': {'k': 'k2'}}}, 'e': {}}}
    assert sorted(iter_file_keys(tree)) == ['k1', 'k2']


def test_not_a_storage(tmp_path: Path) -> None:
    from sqlitedos.exceptions import UnreachableStorage

    with pytest.raises(UnreachableStorage):
        verify(tmp_path)


def test_unreadable_pack_index(dos_storage: Any) -> None:
    small_graph(dos_storage)
    container = dos_storage.get_container()
    try:
        container.pack_all_loose()
    finally:
        container.close()
    dos_storage.close()
    (Path(dos_storage.filepath_container) / 'packs.idx').write_bytes(b'not a database')
    report = verify(dos_storage.filepath_root)
    assert kinds(report) == {'container'} and 'packs.idx' in report.problems[0].detail


@pytest.mark.parametrize(
    ('table', 'column', 'text'),
    [
        ('db_dbnode', 'attributes', '{"x": NaN}'),  # what json.dumps writes for float('nan')
        ('db_dbnode', 'extras', '{"x": Infinity}'),
        ('db_dbnode', 'repository_metadata', '{"o": {"a": {"k": '),
        ('db_dbcomputer', 'metadata', "{'single': 'quotes'}"),
    ],
)
def test_invalid_json_is_a_named_finding(dos_storage: Any, table: str, column: str, text: str) -> None:
    ids = small_graph(dos_storage)
    if table == 'db_dbcomputer':
        raw_write(
            dos_storage,
            'INSERT INTO db_dbcomputer (uuid, label, hostname, description, scheduler_type, transport_type, metadata)'
            " VALUES (?, 'c', 'h', '', 's', 't', ?)",
            (str(uuid.uuid4()), text),
        )
        (row,) = storage_rows(dos_storage, 'SELECT id FROM db_dbcomputer')
    else:
        raw_write(dos_storage, f'UPDATE db_dbnode SET {column} = ? WHERE id = ?', (text, ids['x']))
        row = ids['x']
    report = verify(dos_storage)
    invalid = [problem.detail for problem in report.problems if problem.kind == 'invalid_json']
    assert invalid == [f'{table} row {row}: {column} is not valid JSON'], report.render()


def storage_rows(storage: Any, sql: str) -> list[Any]:
    return [row[0] for row in storage.get_session().execute(sql)]


@pytest.mark.parametrize(
    ('label', 'finds'),
    [
        ('ok_label_1', False),
        ('x', False),
        ('', True),
        ('_x', True),
        ('x_', True),
        ('a-b', True),
        ('a b', True),
        ('é', True),
        ('a\nb', True),
        ('A%', True),
        ('a\x00b', True),
        (b'ab', True),
        (5, False),  # stored as the text '5' (the column has TEXT affinity)
    ],
)
def test_link_labels_checked_as_validate_link_label(dos_storage: Any, label: Any, finds: bool) -> None:
    ids = small_graph(dos_storage)
    raw_write(dos_storage, 'UPDATE db_dblink SET label = ? WHERE output_id = ?', (label, ids['y']))
    report = verify(dos_storage)
    assert (kinds(report) == {'link_rule'}) is finds, report.render()
    assert report.ok is not finds


def test_self_link_and_unknown_link_type(dos_storage: Any) -> None:
    ids = small_graph(dos_storage)
    raw_write(dos_storage, INSERT_LINK, (ids['x'], ids['x'], 'me', 'input_calc'))
    raw_write(dos_storage, INSERT_LINK, (ids['x'], ids['calc'], 'other', 'no_such_type'))
    details = sorted(problem.detail for problem in verify(dos_storage).problems)
    assert any(detail.endswith('links a node to itself') for detail in details), details
    assert any(detail.endswith('unknown link type') for detail in details), details


def test_empty_metadata_is_not_decoded(dos_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlitedos.verify as verify_module

    small_graph(dos_storage)  # 3 nodes with files
    for _ in range(20):
        add_node(dos_storage)  # no files: repository_metadata '{}'
    calls: list[Any] = []
    real = verify_module.decode_json
    monkeypatch.setattr(verify_module, 'decode_json', lambda cell: calls.append(cell) or real(cell))
    report = verify(dos_storage)
    assert report.ok and report.counts['nodes with files'] == 3
    trees = [cell for cell in calls if str(cell).startswith('{')]  # not the repository uuid setting
    assert len(trees) == 3 and '{}' not in trees


def test_objects_checked_batch_by_batch(dos_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlitedos.verify as verify_module

    monkeypatch.setattr(verify_module, 'HASH_BATCH', 2)
    ids = small_graph(dos_storage)
    extra = add_node(dos_storage, files={f'f{i}': f'content {i}'.encode() for i in range(5)})
    missing = node_key(dos_storage, extra, 'f1')
    loose_path(dos_storage, missing).unlink()
    corrupt = node_key(dos_storage, ids['x'], 'a.txt')
    loose_path(dos_storage, corrupt).write_bytes(b'tampered')
    report = verify(dos_storage)
    assert sorted((p.kind, p.detail.split()[1]) for p in report.problems) == sorted(
        [('missing_object', missing), ('corrupt_object', corrupt)]
    ), report.render()
    assert report.counts['referenced objects'] == 9 and report.counts['container objects'] == 8


WORKFLOW = 'process.workflow.workchain.WorkChainNode.'


@pytest.mark.parametrize(
    ('links', 'expected'),
    [
        # (source, target, type, label) rows added behind the storage's back -> the degree findings
        (
            [('calc', 'y2', 'create', 'result')],
            {"2 create links share input_id={calc}, label='result' (unique_pair at the out end)"},
        ),
        (
            [('x2', 'calc', 'input_calc', 'x')],
            {"2 input_calc links share output_id={calc}, label='x' (unique_pair at the in end)"},
        ),
        (
            [('x', 'calc', 'input_calc', 'x')],
            {
                "2 input_calc links share input_id={x}, output_id={calc}, label='x' (unique_triple at the out end)",
                "2 input_calc links share output_id={calc}, label='x' (unique_pair at the in end)",
            },
        ),
        (
            [('w', 'calc', 'call_calc', 'a'), ('w2', 'calc', 'call_calc', 'b')],
            {'2 call_calc links share output_id={calc} (unique at the in end)'},
        ),
        (
            [('w', 'y', 'return', 'r'), ('w', 'y', 'return', 'r')],
            {
                "2 return links share output_id={y}, input_id={w}, label='r' (unique_triple at the in end)",
                "2 return links share input_id={w}, label='r' (unique_pair at the out end)",
            },
        ),
    ],
)
def test_every_degree_rule_is_checked(dos_storage: Any, links: list[tuple], expected: set[str]) -> None:
    ids = small_graph(dos_storage)
    ids.update(y2=add_node(dos_storage), x2=add_node(dos_storage))
    ids.update(w=add_node(dos_storage, WORKFLOW), w2=add_node(dos_storage, WORKFLOW))
    for source, target, link_type, label in links:
        raw_write(dos_storage, INSERT_LINK, (ids[source], ids[target], label, link_type))
    report = verify(dos_storage)
    assert {p.detail for p in report.problems} == {text.format(**ids) for text in expected}, report.render()


def test_compressed_and_mixed_objects(dos_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects packed compressed, packed plain, loose and missing, over several batches: each found as it is."""
    import sqlitedos.verify as verify_module

    monkeypatch.setattr(verify_module, 'HASH_BATCH', 2)
    ids = small_graph(dos_storage)
    compressed = add_node(dos_storage, files={f'z{i}': b'compress me ' * 50 + bytes([i]) for i in range(3)})
    pack_objects(dos_storage, compress=True)
    plain = add_node(dos_storage, files={f'p{i}': f'plain {i}'.encode() for i in range(3)})
    pack_objects(dos_storage)
    loose = add_node(dos_storage, files={'l0': b'still loose', 'l1': b'gone soon'})
    assert verify(dos_storage).ok
    gone = node_key(dos_storage, loose, 'l1')
    loose_path(dos_storage, gone).unlink()
    pack = Path(dos_storage.filepath_container) / 'packs' / '0'
    content = pack.read_bytes()
    assert content.count(b'plain 1') == 1
    pack.write_bytes(content.replace(b'plain 1', b'PLAIN 1'))
    report = verify(dos_storage)
    found = sorted((p.kind, p.detail.split()[1]) for p in report.problems)
    assert found == sorted([('missing_object', gone), ('corrupt_object', node_key(dos_storage, plain, 'p1'))])
    assert report.counts['referenced objects'] == 12  # 4 in the small graph ('shared' twice), 3 + 3 + 2
    del ids, compressed


def test_sqlite_checks_run_beside_the_content_checks_and_stop_with_them(dos_storage: Any) -> None:
    """integrity_check runs in a thread of its own while the rest is checked; a failure stops it and leaves none."""
    import threading

    small_graph(dos_storage)
    callers: list[threading.Thread] = []

    def progress(label: str, done: int, total: int) -> None:
        callers.append(threading.current_thread())
        raise RuntimeError('stop here')

    with pytest.raises(RuntimeError, match='stop here'):
        verify(dos_storage, progress=progress)
    assert callers == [threading.main_thread()]  # progress is reported on the caller's thread
    assert all(thread.name != 'sqlitedos-verify-integrity' for thread in threading.enumerate())
    report = verify(dos_storage)  # the next run is unaffected
    assert report.ok, report.render()
