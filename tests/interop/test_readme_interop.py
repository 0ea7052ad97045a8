"""The README's section on opening a sqlitedos folder with aiida-core runs as printed, with aiida's real ``verdi``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.test_readme import VENV_BIN, bash_block, fresh_clone, run_bash


def test_readme_aiida_profile_on_a_sqlitedos_folder(tmp_path: Path) -> None:
    """``verdi profile setup`` on an empty path, the sqlitedos folder moved in: aiida reads and writes it."""
    clone = fresh_clone(tmp_path)
    script = bash_block('Open a sqlitedos folder with aiida-core').replace('$(mktemp -d)', str(tmp_path / 'out'))
    config = tmp_path / 'aiida-config'  # verdi's profiles: a private folder, never the user's ~/.aiida
    result = run_bash(f'mkdir {tmp_path / "out"}\n{script}', clone, VENV_BIN, AIIDA_PATH=str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.environ.get('AIIDA_PATH') != str(config)
    assert (config / '.aiida' / 'config.json').is_file()
    out = result.stdout
    assert 'Success: Created new profile `mine`.' in out
    assert re.search(r'Nodes:\n\s+count: 65\n', out), out  # verdi storage info: the imported archive's nodes
    assert "Group created with PK = 4 and label 'made-by-verdi'" in out
    assert re.search(r'^\s+Groups: 4$', out, flags=re.MULTILINE), out  # 3 from the archive and its import, 1 by verdi
    assert not (tmp_path / 'out' / 'store').exists()
