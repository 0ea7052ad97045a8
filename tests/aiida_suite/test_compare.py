"""``make aiida-suite``'s comparison of two junit files: what counts as an unexpected failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COMPARE = Path(__file__).with_name('compare.py')


def junit(path: Path, outcomes: dict[str, str]) -> Path:
    cases = []
    for test_id, outcome in outcomes.items():
        classname, name = test_id.split('::')
        inner = {'failed': '<failure message="boom">E boom</failure>', 'skipped': '<skipped/>', 'passed': ''}[outcome]
        cases.append(f'<testcase classname="{classname}" name="{name}">{inner}</testcase>')
    path.write_text(f'<testsuites><testsuite>{"".join(cases)}</testsuite></testsuites>')
    return path


def compare(tmp_path: Path, reference: dict, plugin: dict, listed: str) -> subprocess.CompletedProcess:
    expected = tmp_path / 'expected.txt'
    expected.write_text(listed)
    return subprocess.run(
        [
            sys.executable,
            str(COMPARE),
            str(junit(tmp_path / 'ref.xml', reference)),
            str(junit(tmp_path / 'plugin.xml', plugin)),
            str(expected),
        ],
        capture_output=True,
        text=True,
    )


def test_a_test_passing_only_on_the_reference_fails_the_comparison(tmp_path: Path) -> None:
    reference = {'t.a::x': 'passed', 't.a::y': 'passed', 't.a::z': 'failed', 't.a::s': 'skipped'}
    plugin = {'t.a::x': 'passed', 't.a::y': 'failed', 't.a::z': 'failed', 't.a::s': 'skipped'}
    result = compare(tmp_path, reference, plugin, '')
    assert result.returncode == 1
    assert 'UNEXPECTED: t.a::y (failed)' in result.stdout
    assert '| passed   |               2 |               1 |' in result.stdout
    assert '| failed   |               1 |               2 |' in result.stdout


def test_listed_failures_are_expected_and_stale_entries_reported(tmp_path: Path) -> None:
    reference = {'t.a::x': 'passed', 't.a::y': 'passed'}
    plugin = {'t.a::x': 'passed', 't.a::y': 'failed'}
    result = compare(tmp_path, reference, plugin, '# header\nt.a::y  # inspects SQLAlchemy\nt.a::x  # now passes\n')
    assert result.returncode == 0, result.stdout
    assert 'listed but not failing (remove it from the list): t.a::x' in result.stdout
    assert 'UNEXPECTED' not in result.stdout


def test_more_than_25_listed_tests_fail_the_comparison(tmp_path: Path) -> None:
    listed = ''.join(f't.a::n{i}  # reason\n' for i in range(26))
    result = compare(tmp_path, {'t.a::x': 'passed'}, {'t.a::x': 'passed'}, listed)
    assert result.returncode == 1
    assert 'at most 25' in result.stdout


def test_the_shipped_list_is_short_and_gives_reasons() -> None:
    lines = [line for line in COMPARE.with_name('expected_failures.txt').read_text().splitlines()]
    entries = [line for line in lines if line.strip() and not line.startswith('#')]
    assert 0 < len(entries) <= 25
    assert all('::' in line.split('#')[0] and line.split('#', 1)[1].strip() for line in entries)
