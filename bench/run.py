#!/usr/bin/env python
"""Benchmarks W1-W7 on sqlitedos (folder storage and temp backend) against the raw sqlite3/disk-objectstore limits,
and optionally aiida-core 2.9.4, all in one run. See bench/README.md.

    python bench/run.py --n 10000                      # sqlitedos + raw limits, 3 runs each, median
    python bench/run.py --n 2000 --workloads W1,W4     # a quick subset
    python bench/run.py --aiida-python .venv-aiida/bin/python --aiida-reps 1   # plus aiida-core's column
    python bench/run.py --update-readme                # rewrite bench/README.md's results from bench/results.json

Exit status: 1 if any workload gave a wrong answer or crashed (a workload whose API is missing is "not available").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import raw
import report
import sqlitedos_side as side
import workloads as wl

ALL = ('W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'W7', 'cold', 'rss')
DOS_ONLY = {'W5', 'W6', 'cold'}
TEMP_WORKLOADS = ('W1', 'W2', 'W3', 'W4', 'W7')


class Run:
    """The state of one benchmark run: records, and the status of each (backend, workload)."""

    def __init__(self, n: int, profile_dir: Path | None = None) -> None:
        self.n = n
        self.profile_dir = profile_dir
        self.records: list[dict] = []
        self.status: dict[str, str] = {}
        self.failed = False

    def attempt(self, key: str, fn, *args) -> bool:
        """Run one workload; record 'ok', 'not available: ...' or 'FAILED: ...'. True if it ran correctly."""
        if self.status.get(key, 'ok') != 'ok':
            return False
        try:
            if self.profile_dir:
                profile(self.profile_dir / f'profile-{key.replace(" ", "-")}.txt', fn, *args)
            else:
                fn(*args)
        except side.NotAvailable as exc:
            self.status[key] = f'not available: {exc}'
            wl.log(f'{key}: not available ({exc})')
            return False
        except Exception as exc:  # noqa: BLE001 - a crash or a wrong answer fails the run
            self.status[key] = f'FAILED: {type(exc).__name__}: {exc}'
            self.failed = True
            wl.log(f'{key}: FAILED\n{traceback.format_exc()}')
            return False
        self.status[key] = 'ok'
        return True


def profile(path: Path, fn, *args) -> None:
    """Run ``fn`` under cProfile and write the top functions (by own and by cumulative time) to ``path``."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    try:
        prof.runcall(fn, *args)
    finally:
        buf = io.StringIO()
        buf.write(f'# {path.stem} (times include cProfile overhead)\n\n## by tottime\n')
        pstats.Stats(prof, stream=buf).sort_stats('tottime').print_stats(30)
        buf.write('\n## by cumulative\n')
        pstats.Stats(prof, stream=buf).sort_stats('cumulative').print_stats(50)
        path.write_text(buf.getvalue())


# ---------------------------------------------------------------------------------------------------------- seeding


def seed_dicts(ctx: side.Context) -> list[int]:
    """N Dict rows written with plain SQL (untimed), when the workload that writes them did not run."""
    conn, ts, user = ctx.conn, raw.now_iso(), ctx.storage.default_user.pk
    rows = [raw.dict_row(i, str(uuid.uuid4()), ts)[:-1] + (user,) for i in range(ctx.n)]
    (before,) = conn.execute('SELECT coalesce(max(id), 0) FROM db_dbnode').fetchone()
    conn.execute('BEGIN')
    conn.executemany(raw.INSERT_NODE, rows)
    conn.execute('COMMIT')
    return list(range(before + 1, before + 1 + ctx.n))


def seed_chain(ctx: side.Context) -> int:
    return raw.insert_chain(ctx.conn, wl.chain_shape(ctx.n))


# ------------------------------------------------------------------------------------------------------------ sides


def run_sqlitedos(run: Run, rec: wl.Recorder, backend: str, wanted: set[str], workdir: Path) -> None:
    """One repetition of the wanted workloads on one sqlitedos backend, in aiida's order (W1 ... W7)."""
    folder = workdir / 'dos-storage'
    try:
        storage = side.open_dos(folder) if backend == side.DOS else side.open_temp()
    except Exception as exc:  # noqa: BLE001 - reported, and the run fails
        run.status[f'{backend} open'] = f'FAILED: {type(exc).__name__}: {exc}'
        run.failed = True
        wl.log(f'{backend}: cannot open\n{traceback.format_exc()}')
        return
    ctx = side.Context(backend, storage, run.n, workdir, rec, folder=folder)
    needs_data = wanted & {'W4', 'W6', 'W7', 'cold'}
    try:
        if 'W1' in wanted and run.attempt(f'{backend} W1', side.w1_store_one_by_one, ctx):
            pass
        elif needs_data:
            ctx.w1_pks = seed_dicts(ctx)
        if 'W2' in wanted and run.attempt(f'{backend} W2', lambda: setattr(ctx, 'w2_pks', side.w2_bulk_insert(ctx))):
            pass
        elif needs_data:
            ctx.w2_pks = seed_dicts(ctx)
        if 'W3' in wanted and run.attempt(f'{backend} W3', side.w3_chain, ctx):
            pass
        elif needs_data:
            ctx.root = seed_chain(ctx)
        if 'W4' in wanted:
            run.attempt(f'{backend} W4', side.w4_queries, ctx)
        if 'cold' in wanted and backend == side.DOS:
            run.attempt(f'{backend} cold', side.cold_start, rec, folder, run.n)
        if 'W5' in wanted and backend == side.DOS:
            run.attempt(f'{backend} W5', side.w5_repository, ctx)
        if 'W6' in wanted and backend == side.DOS:
            run.attempt(f'{backend} W6', side.w6_archive, ctx)
        if 'W7' in wanted:
            run.attempt(f'{backend} W7', side.w7_delete, ctx)
    finally:
        storage.close()
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(workdir / 'import-target', ignore_errors=True)


def run_raw(run: Run, rec: wl.Recorder, wanted: set[str], workdir: Path, aiida_mode: bool) -> None:
    try:
        raw.run(rec, run.n, wanted, workdir, aiida_mode)
    except Exception as exc:  # noqa: BLE001 - reported, and the run fails
        run.status['raw'] = f'FAILED: {type(exc).__name__}: {exc}'
        run.failed = True
        wl.log(f'raw: FAILED\n{traceback.format_exc()}')


def rss_records(text: str) -> list[dict]:
    """The JSON objects in a script's output (a whole JSON document, or one object per line) that give a peak RSS."""
    try:
        found = json.loads(text)
        found = found if isinstance(found, list) else found.get('results', [found])
    except (ValueError, AttributeError):
        found = []
        for line in text.splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return [r for r in found if isinstance(r, dict) and any(k.startswith('peak_rss') for k in r)]


def peak_bytes(record: dict) -> int | None:
    for key, scale in (
        ('peak_rss_bytes', 1),
        ('peak_rss_kib', 2**10),
        ('peak_rss_kb', 1000),
        ('peak_rss_mib', 2**20),
        ('peak_rss_mb', 10**6),
        ('peak_rss', 1),
    ):
        if isinstance(record.get(key), (int, float)):
            return int(record[key] * scale)
    return None


def run_archive_memory(run: Run, rec: wl.Recorder, workdir: Path) -> None:
    """Peak RSS of archive import at 10k and 100k nodes, measured by ``bench/archive_memory.py`` (if present).

    Its ``measure(n_dicts, n_chain, n_files)`` is called for 10k and 100k Dict nodes (plus n/4 files) when it has
    one; else ``archive_memory.py --nodes N --json PATH`` writing ``{"nodes": N, "peak_rss_bytes": ...,
    "seconds": ...}``; failing that, the JSON objects it prints (with a ``peak_rss*`` key) are taken.
    """
    script = HERE / 'archive_memory.py'
    key = f'{side.DOS} rss'
    if not script.exists():
        run.status[key] = 'not available: bench/archive_memory.py is not there yet'
        return
    import importlib

    module = importlib.import_module('archive_memory')
    if hasattr(module, 'measure'):  # measure(n_dicts, n_chain, n_files) -> {'nodes', 'import_s', 'import_rss_mib', ...}
        for nodes in (10_000, 100_000):
            got = module.measure(nodes, 0, nodes // 4)
            rec.add(
                side.DOS,
                'rss',
                f'import_archive_peak_rss({nodes} nodes)',
                got['nodes'],
                'nodes',
                got['import_s'],
                peak_rss_bytes=int(got['import_rss_mib'] * 2**20),
                raw_output=got,
            )
        run.status[key] = 'ok'
        return
    out = workdir / 'archive-memory.json'
    found: list[dict] = []
    for nodes in (10_000, 100_000):
        out.unlink(missing_ok=True)
        argv = [sys.executable, str(script), '--nodes', str(nodes), '--json', str(out)]
        proc = subprocess.run(argv, check=False, capture_output=True, text=True)
        got = rss_records(out.read_text() if out.exists() else proc.stdout)
        if proc.returncode != 0 or not got:
            break
        found += [{'nodes': nodes, **r} for r in got]
    if not found:  # another interface: run it as it is and read what it prints
        proc = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True)
        found = rss_records(proc.stdout)
    if not found:
        tail = ' '.join((proc.stderr or proc.stdout).strip().splitlines()[-1:])
        run.status[key] = f'not available: archive_memory.py gave no peak RSS (exit {proc.returncode}: {tail})'
        return
    for r in found:
        nodes = int(r.get('nodes') or r.get('n') or 0)
        rec.add(
            side.DOS,
            'rss',
            f'import_archive_peak_rss({nodes} nodes)',
            nodes or 1,
            'nodes',
            float(r.get('seconds') or 0.0),
            peak_rss_bytes=peak_bytes(r),
            raw_output=r,
        )
    run.status[key] = 'ok'


def run_aiida(run: Run, args, wanted: set[str]) -> None:
    """aiida-core 2.9.4's side: ``aiida_side.py`` in aiida's venv, one worker process per repetition and backend."""
    out = Path(tempfile.mkstemp(prefix='bench-aiida-', suffix='.json')[1])
    cmd = [
        args.aiida_python,
        str(HERE / 'aiida_side.py'),
        '--n',
        str(args.aiida_n or run.n),
        '--reps',
        str(args.aiida_reps or args.reps),
        '--workloads',
        ','.join(sorted(wanted)),
        '--out',
        str(out),
    ]
    wl.log(f'aiida: {" ".join(cmd)}')
    proc = subprocess.run(cmd, check=False)
    records = json.loads(out.read_text() or '[]') if out.exists() else []
    out.unlink(missing_ok=True)
    run.records.extend(records)
    run.status['aiida'] = 'ok' if proc.returncode == 0 else f'FAILED: aiida_side.py exited {proc.returncode}'
    if proc.returncode != 0:
        run.failed = True


# ------------------------------------------------------------------------------------------------------------ main


def meta(args, wall: float) -> dict:
    import disk_objectstore

    return {
        'tool': 'bench/run.py',
        'n': args.n,
        'reps': args.reps,
        'aiida_n': (args.aiida_n or args.n) if args.aiida_python else None,
        'aiida_reps': (args.aiida_reps or args.reps) if args.aiida_python else None,
        'query_repeats': wl.QUERY_REPEATS,
        'python': platform.python_version(),
        'sqlite': sqlite3.sqlite_version,
        'disk_objectstore': disk_objectstore.__version__,
        'machine': f'{platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}',
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'git_commit': subprocess.run(
            ['git', 'rev-parse', '--short', 'HEAD'], check=False, capture_output=True, text=True, cwd=HERE
        ).stdout.strip(),
        'wall_seconds': round(wall, 1),
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=wl.DEFAULT_N)
    p.add_argument('--reps', type=int, default=wl.DEFAULT_REPS, help='runs per figure (the median is kept)')
    p.add_argument('--workloads', default=','.join(ALL), help=f'comma list of: {",".join(ALL)}')
    p.add_argument('--backends', default='dos,temp,raw', help='comma list of: dos, temp, raw')
    p.add_argument('--aiida-python', help="a Python with aiida-core 2.9.4: adds aiida's column")
    p.add_argument('--aiida-reps', type=int, help='runs for the aiida side (default: --reps)')
    p.add_argument('--aiida-n', type=int, help='N for the aiida side (default: --n); ratios are per operation')
    p.add_argument('--raw-aiida-mode', action='store_true', help="also the raw limits with aiida's pragmas")
    p.add_argument('--workdir', help='scratch folder (default: a new temporary folder, removed afterwards)')
    p.add_argument('--results', default=str(HERE / 'results.json'))
    p.add_argument(
        '--cprofile',
        action='store_true',
        help='profile each sqlitedos workload into bench/profile-*.txt (timings then include the overhead)',
    )
    p.add_argument('--update-readme', action='store_true', help='only rewrite README.md from --results, run nothing')
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.update_readme:
        report.update_readme(json.loads(Path(args.results).read_text()), HERE / 'README.md')
        return 0
    wanted = set(args.workloads.split(','))
    unknown = wanted - set(ALL)
    if unknown:
        sys.exit(f'unknown workloads {sorted(unknown)}; expected some of {",".join(ALL)}')
    backends = set(args.backends.split(','))
    run = Run(args.n, HERE if args.cprofile else None)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix='sqlitedos-bench-'))
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    try:
        for rep in range(args.reps):
            rec = wl.Recorder(args.n, rep)
            wl.log(f'rep {rep + 1}/{args.reps}')
            if 'raw' in backends:
                (workdir / 'raw').mkdir(exist_ok=True)
                run_raw(run, rec, wanted, workdir / 'raw', args.raw_aiida_mode)
                shutil.rmtree(workdir / 'raw', ignore_errors=True)
                wl.settle_disk()
            if 'dos' in backends:
                run_sqlitedos(run, rec, side.DOS, wanted, workdir)
                wl.settle_disk()
            if 'temp' in backends:
                run_sqlitedos(run, rec, side.TEMP, wanted & set(TEMP_WORKLOADS), workdir)
            run.records.extend(rec.records)
        if 'rss' in wanted and 'dos' in backends:
            rec = wl.Recorder(args.n)
            run_archive_memory(run, rec, workdir)
            run.records.extend(rec.records)
        if args.aiida_python:
            run_aiida(run, args, wanted - {'rss'})
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.cprofile:
        wl.log(f'wrote {HERE}/profile-*.txt; not writing {args.results} (the timings include the profiler)')
        return 1 if run.failed else 0
    data = {'meta': meta(args, time.time() - t_start), 'status': run.status, 'results': wl.aggregate(run.records)}
    Path(args.results).write_text(json.dumps(data, indent=1, default=str))
    print(report.render(data))
    wl.log(f'wrote {args.results}')
    if run.failed:
        wl.log('FAILED: ' + '; '.join(f'{k}: {v}' for k, v in run.status.items() if v.startswith('FAILED')))
    return 1 if run.failed else 0


if __name__ == '__main__':
    sys.exit(main())
