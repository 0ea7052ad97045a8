"""The README's Python example runs as printed (with its /tmp paths moved into a test folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_python_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / 'README.md').read_text('utf-8')
    (code,) = re.findall(r'```python\n(.*?)```', readme, flags=re.DOTALL)
    code = code.replace('/tmp/', f'{tmp_path}/')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\[\['[0-9a-f-]{36}', 3\]\]", lines[0])
    assert lines[1] == '2'
