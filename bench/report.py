"""Render ``bench/results.json`` as markdown tables: sqlitedos vs the raw limits (and aiida-core), with the targets.

Ratios are per operation: (seconds per op of sqlitedos) / (seconds per op of the comparator); 1.0 means sqlitedos
runs at the raw limit. ``aiida/dos`` is sqlitedos' speed-up over aiida-core's sqlite_dos (per operation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

START, END = '<!-- results:start -->', '<!-- results:end -->'
TARGET_N = 10_000
DOS, TEMP, AIIDA_DOS, AIIDA_TEMP = 'sqlitedos-dos', 'sqlitedos-temp', 'aiida-dos', 'aiida-temp'
W4_QUERIES = (
    'a_count_dict',
    'b_nested_x_eq_3',
    'c_i_gt_half_desc_limit100',
    'd_like_project_name',
    'e1_calc_and_output_of_data',
    'e2_all_calc_outputs',
    'e3_all_calc_inputs',
    'f_descendants_of_root',
    'g_project_star_1000',
)
COLD = 'cold_start(process+import+open+count)'


@dataclass(frozen=True)
class Row:
    """One line of the table: a sqlitedos metric, its raw comparators and its targets.

    A target is ``('raw', f)`` (at most f times the raw limit per operation), ``('abs', s)`` (at most s seconds at
    N=10000, scaled linearly for another N when ``scaled``), or ``('aiida', f)`` (at least f times faster than aiida).
    """

    workload: str
    metric: str
    raw: tuple[str, ...] | None  # (backend, metric, [metric, ...]): several metrics are added up
    raw_temp: tuple[str, ...] | None = None
    targets: tuple[tuple, ...] = ()
    scaled: bool = True
    notes: list = field(default_factory=list, compare=False, hash=False)


WAL, MEM, DOSRAW = 'raw-sqlite3-wal', 'raw-sqlite3-memory', 'raw-disk-objectstore'
ROWS = [
    Row('cold', COLD, ('python', COLD), targets=(('abs', 0.10),), scaled=False),
    Row(
        'W1',
        'store_dict_one_by_one',
        (WAL, 'insert_one_txn_per_row'),
        (MEM, 'insert_one_txn_per_row'),
        (('raw', 2.0), ('aiida', 25.0)),
    ),
    Row('W2', 'bulk_insert_dict', (WAL, 'executemany_one_txn'), (MEM, 'executemany_one_txn'), (('raw', 1.3),)),
    Row('W3', 'chain_calcs', (WAL, 'chain_calcs'), (MEM, 'chain_calcs'), (('abs', 1.5),)),
    *[
        Row(
            'W4',
            q,
            (WAL, f'{q}[best]'),
            (WAL, f'{q}[best]'),
            (('raw', 1.5),) + ((('abs', 1e-4),) if q.startswith('e1') else ()),
            scaled=False,
        )
        for q in W4_QUERIES
    ],
    # The repeated lookup through a prepared query (``storage.query().prepare(dict)``, run again).
    Row(
        'W4',
        'e1_calc_and_output_of_data[prepared]',
        (WAL, 'e1_calc_and_output_of_data[best]'),
        (WAL, 'e1_calc_and_output_of_data[best]'),
        (('raw', 2.0),),
        scaled=False,
    ),
    Row('W5', 'node_put_files(loose)', (DOSRAW, 'add_streamed_object(loose, one by one)'), None, (('raw', 1.2),)),
    Row('W5', 'node_read_files(loose)', (DOSRAW, 'get_object_content(loose, one by one)'), None, (('raw', 1.3),)),
    Row('W5', 'maintain_full', (DOSRAW, 'pack_all_loose', 'repack+clean_storage(vacuum)')),
    Row('W5', 'node_read_files(packed)', (DOSRAW, 'get_object_content(packed, one by one)'), None, (('raw', 1.3),)),
    Row(
        'W5',
        'backend_put_object_from_filelike(loose)',
        (DOSRAW, 'add_streamed_object(loose, one by one)'),
        None,
        (('raw', 1.2),),
    ),
    Row(
        'W5',
        'backend_get_object_content(loose)',
        (DOSRAW, 'get_object_content(loose, one by one)'),
        None,
        (('raw', 1.3),),
    ),
    Row(
        'W5', 'backend_iter_object_streams(loose)', (DOSRAW, 'get_objects_content(loose, bulk)'), None, (('raw', 1.3),)
    ),
    Row('W6', 'create_archive(all)', ('raw-sqlite3+dos', 'export_zip(db copy + objects)'), None, (('abs', 1.5),)),
    Row(
        'W6',
        'import_archive(fresh profile)',
        ('raw-sqlite3+dos', 'import_zip(insert-select + add_objects_to_pack)'),
        None,
        (('abs', 1.5),),
    ),
    Row('W7', 'delete_nodes(half of W1)', (WAL, 'delete_ids_one_txn'), (WAL, 'delete_ids_one_txn'), (('raw', 1.5),)),
    Row(
        'W7',
        'delete_nodes_and_connections(half of W2)',
        (WAL, 'delete_ids_one_txn'),
        (WAL, 'delete_ids_one_txn'),
        (('raw', 1.5),),
    ),
    Row(
        'W7',
        'delete_nodes(W3 root, cascades)',
        (WAL, 'delete_cascade_from_root_one_txn'),
        (WAL, 'delete_cascade_from_root_one_txn'),
        (('abs', 0.1),),
    ),
]


def index(data: dict) -> dict[tuple[str, str, str], dict]:
    return {(r['backend'], r['workload'], r['metric']): r for r in data['results']}


def per_op(rec: dict | None) -> float | None:
    if not rec or not rec.get('n_ops') or rec.get('seconds') is None:
        return None
    return rec['seconds'] / rec['n_ops']


def fmt_seconds(s: float) -> str:
    return f'{s * 1e6:.1f} us' if s < 1e-4 else f'{s * 1000:.2f} ms' if s < 1 else f'{s:.2f} s'


def fmt(rec: dict | None, n: int) -> str:
    if not rec:
        return '-'
    s = rec['seconds']
    text = fmt_seconds(s)
    if rec['unit'] not in ('queries', 'processes') and s > 0:
        text += f' ({rec["n_ops"] / s:,.0f}/s)'
    if rec.get('n') not in (None, n):
        text += f' [N={rec["n"]}]'
    return text


def ratio(a: dict | None, b: dict | None) -> float | None:
    pa, pb = per_op(a), per_op(b)
    return None if pa is None or not pb else pa / pb


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return '-'
    return f'{r:,.2f}x' if r < 10 else f'{r:,.1f}x' if r < 100 else f'{r:,.0f}x'


def raw_lookup(idx: dict, workload: str, key: tuple[str, ...] | None) -> dict | None:
    if key is None:
        return None
    backend, *metrics = key
    recs = [idx.get((backend, workload, m)) for m in metrics]
    if any(r is None for r in recs):
        return None
    if len(recs) == 1:
        return recs[0]
    return {**recs[0], 'seconds': sum(r['seconds'] for r in recs), 'metric': ' + '.join(metrics)}


def judge(row: Row, dos: dict | None, rdos: dict | None, aiida: dict | None, n: int) -> tuple[str, str]:
    """(the targets as text, 'met' / 'MISSED ...' / 'n/a')."""
    if not row.targets:
        return '-', '-'
    texts, verdicts = [], []
    for kind, value in row.targets:
        if kind == 'raw':
            texts.append(f'<= {value:g}x raw')
            r = ratio(dos, rdos)
            verdicts.append(None if r is None else r <= value)
        elif kind == 'abs':
            limit = value * n / TARGET_N if row.scaled else value
            texts.append(f'<= {fmt_seconds(limit)}' + (f' (scaled to N={n})' if row.scaled and n != TARGET_N else ''))
            verdicts.append(None if dos is None else dos['seconds'] <= limit)
        elif kind == 'aiida':
            texts.append(f'>= {value:g}x faster than aiida')
            r = ratio(aiida, dos)
            verdicts.append(None if r is None else r >= value)
    if any(v is False for v in verdicts):
        missed = [t for t, v in zip(texts, verdicts) if v is False]
        status = 'MISSED (' + '; '.join(missed) + ')'
    elif all(v is True for v in verdicts):
        status = 'met'
    elif any(v is True for v in verdicts):
        status = 'met (' + '; '.join(t for t, v in zip(texts, verdicts) if v is None) + ': n/a)'
    else:
        status = 'n/a'
    return '; '.join(texts), status


def table(data: dict) -> tuple[str, list[tuple[str, str, str]]]:
    idx, n = index(data), data['meta']['n']
    with_aiida = any(b.startswith('aiida') for (b, _, _) in idx)
    head = [
        'workload',
        'metric',
        'sqlitedos dos',
        'sqlitedos temp',
        'raw limit (comparator)',
        'raw',
        'dos/raw',
        'temp/raw',
    ]
    if with_aiida:
        head += ['aiida dos', 'aiida temp', 'aiida/dos', 'aiida/temp']
    head += ['target', 'status']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    verdicts = []
    for row in ROWS:
        dos, temp = idx.get((DOS, row.workload, row.metric)), idx.get((TEMP, row.workload, row.metric))
        rdos, rtemp = raw_lookup(idx, row.workload, row.raw), raw_lookup(idx, row.workload, row.raw_temp)
        adoc, atemp = idx.get((AIIDA_DOS, row.workload, row.metric)), idx.get((AIIDA_TEMP, row.workload, row.metric))
        if not (dos or temp or adoc):
            status = data.get('status', {}).get(f'{DOS} {row.workload}', 'not run')
            dos_cell = status if status != 'ok' else '-'
        else:
            dos_cell = fmt(dos, n)
        comparator = '-' if not rdos else f'{rdos["backend"].replace("raw-", "")}: {rdos["metric"]}'
        if rtemp and rtemp is not rdos:
            comparator += f'; temp: {rtemp["backend"].replace("raw-", "")}'
        raw_cell = fmt(rdos, n) + (f' / {fmt(rtemp, n)}' if rtemp and rtemp is not rdos else '')
        cols = [
            row.workload,
            row.metric,
            dos_cell,
            fmt(temp, n),
            comparator,
            raw_cell,
            fmt_ratio(ratio(dos, rdos)),
            fmt_ratio(ratio(temp, rtemp)),
        ]
        if with_aiida:
            cols += [fmt(adoc, n), fmt(atemp, n), fmt_ratio(ratio(adoc, dos)), fmt_ratio(ratio(atemp, temp))]
        target, status = judge(row, dos, rdos, adoc, n)
        cols += [target, status]
        verdicts.append((row.workload, row.metric, status))
        lines.append('| ' + ' | '.join(cols) + ' |')
    return '\n'.join(lines), verdicts


def sql_split(data: dict) -> str:
    """W4: sqlitedos' QueryBuilder vs its compiled SQL run straight through sqlite3 vs natural SQL, same database."""
    idx, n = index(data), data['meta']['n']
    lines = [
        (
            '| query | sqlitedos QueryBuilder (dos) | prepared (dos) | its SQL via sqlite3 | python share | '
            'natural SQL, same db | raw best (own db) | prepared / raw best | aiida QueryBuilder (dos) |'
        ),
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for q in W4_QUERIES:
        qb = idx.get((DOS, 'W4', q))
        sql = idx.get((DOS, 'W4', f'{q}[sqlitedos-sql-via-sqlite3]'))
        nat = idx.get((DOS, 'W4', f'{q}[natural-sql-same-db]'))
        best = idx.get((WAL, 'W4', f'{q}[best]'))
        prepared = idx.get((DOS, 'W4', f'{q}[prepared]'))
        share = f'{100 * (1 - sql["seconds"] / qb["seconds"]):.0f}%' if qb and sql else '-'
        ratio = f'{prepared["seconds"] / best["seconds"]:.2f}x' if prepared and best else '-'
        lines.append(
            f'| {q} | {fmt(qb, n)} | {fmt(prepared, n)} | {fmt(sql, n)} | {share} | {fmt(nat, n)} | {fmt(best, n)} | '
            f'{ratio} | {fmt(idx.get((AIIDA_DOS, "W4", q)), n)} |'
        )
    return '\n'.join(lines)


def extras(data: dict) -> list[str]:
    idx, out = index(data), []
    peaks = {}
    for (backend, workload, metric), rec in sorted(idx.items()):
        if workload == 'rss' and rec.get('peak_rss_bytes'):
            peaks[rec['n_ops']] = rec['peak_rss_bytes']
            out.append(
                f'- {metric}: peak RSS {rec["peak_rss_bytes"] / 2**20:,.0f} MiB (import {fmt_seconds(rec["seconds"])}, '
                f'{rec["n_ops"]} nodes; `bench/archive_memory.py`, one run)'
            )
        if workload == 'W6' and rec.get('archive_bytes') and 'create' in metric:
            out.append(f'- archive size ({backend}): {rec["archive_bytes"] / 1e6:.1f} MB for {rec["n_ops"]} nodes')
    if len(peaks) == 2:
        small, big = (peaks[k] for k in sorted(peaks))
        out.append(f'- archive import peak RSS, 10x the nodes: {big / small:.2f}x the memory')
    bad = {k: v for k, v in data.get('status', {}).items() if v != 'ok'}
    for key, value in sorted(bad.items()):
        out.append(f'- {key}: {value}')
    return out


def render(data: dict) -> str:
    m = data['meta']
    body, verdicts = table(data)
    met = sum(1 for *_, s in verdicts if s.startswith('met'))
    missed = sum(1 for *_, s in verdicts if s.startswith('MISSED'))
    aiida = ''
    if m.get('aiida_n'):
        aiida = f'; aiida-core side N={m["aiida_n"]}, {m["aiida_reps"]} run(s)'
    parts = [
        (
            f'Run {m["date"]} at commit {m.get("git_commit", "?")}: N={m["n"]}, median of {m["reps"]} runs '
            f'(W4: median of {m["query_repeats"]} timed calls per run){aiida}; Python {m["python"]}, SQLite {m["sqlite"]}, '
            f'disk-objectstore {m["disk_objectstore"]}, {m["machine"]}; wall time {m["wall_seconds"]} s.'
        ),
        *[
            f'Re-measured later ({merged["date"]}, commit {merged["git_commit"]}, merged with `bench/merge.py`): '
            + ', '.join(merged['parts'])
            + '.'
            for merged in m.get('merged', [])
        ],
        '',
        body,
        '',
        f'Targets: {met} met, {missed} missed, {len(verdicts) - met - missed} not measured.',
        '',
        'W4 split (same storage; QueryBuilder = `QueryBuilder.from_dict(storage, query dict)` then `.count()`/`.all()`):',
        '',
        sql_split(data),
    ]
    notes = extras(data)
    if notes:
        parts += ['', *notes]
    return '\n'.join(parts)


def update_readme(data: dict, readme: Path) -> None:
    body = readme.read_text()
    start, end = body.index(START) + len(START), body.index(END)
    readme.write_text(body[:start] + '\n' + render(data) + '\n' + body[end:])
