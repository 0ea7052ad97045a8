"""Merge result files of bench/run.py: the figures of later files replace those of earlier ones, per (backend, workload).

Used to add a re-run of some workloads (after a fix) to a full run, without re-running aiida-core's 35 minutes:

    python bench/merge.py bench/results.json /tmp/rerun.json -o bench/results.json
    python bench/run.py --update-readme

Each replaced part is named in ``meta['merged']`` (date and commit of the run it came from), which the README's
results header prints, so a reader sees which figures come from which run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def merge(base: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """``base`` with every (backend, workload) that ``newer`` measured taken from ``newer``."""
    replaced = {(record['backend'], record['workload']) for record in newer['results']}
    results = [record for record in base['results'] if (record['backend'], record['workload']) not in replaced]
    results += newer['results']
    status = {**base.get('status', {}), **newer.get('status', {})}
    meta = dict(base['meta'])
    parts = sorted({f'{backend} {workload}' for backend, workload in replaced})
    meta['merged'] = [
        *base['meta'].get('merged', []),
        {'date': newer['meta']['date'], 'git_commit': newer['meta'].get('git_commit', '?'), 'parts': parts},
    ]
    return {'meta': meta, 'status': status, 'results': results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('base', type=Path)
    parser.add_argument('newer', type=Path, nargs='+')
    parser.add_argument('-o', '--output', type=Path, required=True)
    args = parser.parse_args()
    data = json.loads(args.base.read_text())
    for path in args.newer:
        data = merge(data, json.loads(path.read_text()))
    args.output.write_text(json.dumps(data, indent=1) + '\n')


if __name__ == '__main__':
    main()
