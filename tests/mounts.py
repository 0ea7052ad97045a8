"""A real small file system for the full-disk tests: a tmpfs mounted inside the test's own folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(target: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``8m``, ``96k``) mounted at the new folder ``target`` and unmounted afterwards; the test
    is skipped, saying why, where mounting is impossible (not root, no mount(8))."""
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('a small tmpfs needs root and mount(8)')
    target.mkdir()
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {done.stderr.decode().strip()}')
    try:
        yield target
    finally:
        subprocess.run(['umount', '-l', str(target)], check=True)
