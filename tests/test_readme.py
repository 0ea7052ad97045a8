"""The README's commands run as printed: the Python example (its /tmp paths moved into a test folder) and the
sections on vendoring, shell completion and installing from a wheel, each on a copy of a fresh clone.

The section on opening a folder with aiida-core needs ``verdi``: ``tests/interop/test_readme_interop.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_ARCHIVE = ROOT / 'tests' / 'fixtures' / 'aiida-2.9.4' / 'archive.aiida'


def test_readme_python_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / 'README.md').read_text('utf-8')
    (code,) = re.findall(r'```python\n(.*?)```', readme, flags=re.DOTALL)
    code = code.replace('/tmp/', f'{tmp_path}/')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\[\['[0-9a-f-]{36}', 3\]\]", lines[0])
    assert lines[1] == '2'


def bash_block(heading: str) -> str:
    """The first ```bash block of the README section ``## heading``."""
    readme = (ROOT / 'README.md').read_text('utf-8')
    section = readme.split(f'\n## {heading}\n', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```bash\n(.*?)```', section, flags=re.DOTALL)[0]


def fresh_clone(tmp_path: Path) -> Path:
    """The files of a fresh clone that the README's commands use, in a private folder (they write into it)."""
    clone = tmp_path / 'clone'
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    for name in ('sqlitedos', 'schema'):
        shutil.copytree(ROOT / name, clone / name, ignore=ignore)
    for name in ('pyproject.toml', 'README.md', 'LICENSE', 'Makefile'):
        shutil.copy2(ROOT / name, clone / name)
    (clone / 'tests' / 'fixtures' / 'aiida-2.9.4').mkdir(parents=True)
    shutil.copy2(FIXTURE_ARCHIVE, clone / 'tests' / 'fixtures' / 'aiida-2.9.4' / 'archive.aiida')
    return clone


def run_bash(script: str, cwd: Path, *path_first: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with bash (stop at the first failing command), with ``path_first`` ahead on PATH."""
    environment = dict(os.environ, PATH=os.pathsep.join([*map(str, path_first), os.environ['PATH']]), **env)
    environment.pop('VIRTUAL_ENV', None)
    return subprocess.run(
        ['bash', '-e', '-o', 'pipefail', '-c', script],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=600,
    )


#: The interpreter without sqlitedos installed: the README's ``python3`` outside any venv.
BASE_BIN = Path(sys.base_prefix) / 'bin'
#: This venv's bin folder: the ``sqlitedos`` command.
VENV_BIN = Path(sys.executable).parent


def test_readme_vendoring_runs(tmp_path: Path) -> None:
    """``make vendor`` and the copy from a folder and from a zip, by a ``python3`` that has no sqlitedos installed."""
    clone = fresh_clone(tmp_path)
    check = run_bash('python3 -c "import sqlitedos"', tmp_path, BASE_BIN)
    assert check.returncode == 1 and "No module named 'sqlitedos'" in check.stderr
    script = bash_block('Vendoring: use it without pip').replace('$(mktemp -d)', str(tmp_path / 'out'))
    result = run_bash(f'mkdir {tmp_path / "out"}\n{script}', clone, BASE_BIN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ['0', '0']
    assert (tmp_path / 'out' / 'vendor' / 'sqlitedos' / 'schema' / 'main_0001_initial.sql').is_file()
    assert 'sqlitedos/schema/main_0001_initial.sql' in zipfile.ZipFile(tmp_path / 'out' / 'sqlitedos.zip').namelist()


def test_readme_shell_completion_completes(tmp_path: Path) -> None:
    script = bash_block('Shell completion') + (
        'complete -p sqlitedos\n'
        'COMP_WORDS=(sqlitedos arch); COMP_CWORD=1; _sqlitedos_completion sqlitedos; echo "reply: ${COMPREPLY[*]}"\n'
        'COMP_WORDS=(sqlitedos archive cr); COMPREPLY=(); COMP_CWORD=2; _sqlitedos_completion sqlitedos; echo "reply: ${COMPREPLY[*]}"\n'
    )
    result = run_bash(script, tmp_path, VENV_BIN)
    assert result.returncode == 0, result.stderr
    assert 'complete -o nosort -F _sqlitedos_completion sqlitedos' in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith('reply:')] == [
        'reply: archive',
        'reply: create',
    ]


@pytest.mark.slow
def test_readme_wheel_install_runs(tmp_path: Path) -> None:
    """The wheel section on a fresh clone: a new venv, ``pip wheel``, ``pip install``, the installed command."""
    clone = fresh_clone(tmp_path)
    result = run_bash(bash_block('Install from a wheel'), clone, BASE_BIN)
    assert result.returncode == 0, result.stderr
    from sqlitedos import __version__

    assert result.stdout.splitlines()[-1] == f'sqlitedos, version {__version__}'
    (wheel,) = (clone / 'dist').glob('sqlitedos-*.whl')
    assert wheel.name == f'sqlitedos-{__version__}-py3-none-any.whl'
    installed = clone / 'venv' / 'bin' / 'python'
    where = subprocess.run(
        [installed, '-c', 'import sqlitedos; print(sqlitedos.__file__)'],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert '/site-packages/sqlitedos/' in where.stdout
