"""Compare two runs of aiida-core's test suite (junit files): the reference storage and the plugin.

usage: python compare.py REFERENCE_JUNIT PLUGIN_JUNIT [EXPECTED_FAILURES]

Prints passed/failed/skipped per backend, then every test that passes on the reference but not on the plugin and is
not listed in EXPECTED_FAILURES (default: ``expected_failures.txt`` beside this file). Exits 1 if any remains, or if
the list holds more than 25 ids. Plain stdlib: it runs under any Python.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

MAX_EXPECTED = 25
HERE = Path(__file__).resolve().parent


def outcomes(junit: Path) -> dict[str, str]:
    """``classname::name`` -> 'passed', 'failed' or 'skipped' for every test case of a junit file."""
    results = {}
    for case in ElementTree.parse(junit).getroot().iter('testcase'):
        test_id = f'{case.get("classname")}::{case.get("name")}'
        if case.find('failure') is not None or case.find('error') is not None:
            results[test_id] = 'failed'
        elif case.find('skipped') is not None:
            results[test_id] = 'skipped'
        else:
            results[test_id] = 'passed'
    return results


def expected_failures(path: Path) -> dict[str, str]:
    """The listed test ids with their reasons (``classname::name  # reason`` lines; blank lines and ``#`` lines
    ignored)."""
    listed = {}
    for line in path.read_text('utf-8').splitlines():
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        test_id, _, reason = line.partition('#')
        listed[test_id.strip()] = reason.strip()
    return listed


def counts(results: dict[str, str]) -> dict[str, int]:
    return {kind: sum(1 for outcome in results.values() if outcome == kind) for kind in ('passed', 'failed', 'skipped')}


def main(argv: list[str]) -> int:
    reference, plugin = outcomes(Path(argv[1])), outcomes(Path(argv[2]))
    listed = expected_failures(Path(argv[3]) if len(argv) > 3 else HERE / 'expected_failures.txt')
    names = ('core.sqlite_dos', 'sqlitedos.dos')
    print(f'| {"":8} | {names[0]:>15} | {names[1]:>15} |')
    print(f'|{"-" * 10}|{"-" * 17}|{"-" * 17}|')
    for kind in ('passed', 'failed', 'skipped'):
        print(f'| {kind:8} | {counts(reference)[kind]:>15} | {counts(plugin)[kind]:>15} |')
    regressions = sorted(
        test_id for test_id, outcome in reference.items() if outcome == 'passed' and plugin.get(test_id) != 'passed'
    )
    unexpected = [test_id for test_id in regressions if test_id not in listed]
    stale = sorted(test_id for test_id in listed if test_id not in regressions)
    print(
        f'\npass on core.sqlite_dos, not on sqlitedos.dos: {len(regressions)} ({len(regressions) - len(unexpected)} '
        f'expected, listed in expected_failures.txt)'
    )
    for test_id in stale:
        print(f'  listed but not failing (remove it from the list): {test_id}')
    for test_id in unexpected:
        print(f'  UNEXPECTED: {test_id} ({plugin.get(test_id, "not run")})')
    if len(listed) > MAX_EXPECTED:
        print(f'expected_failures.txt lists {len(listed)} tests; at most {MAX_EXPECTED} are allowed')
        return 1
    return 1 if unexpected else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
