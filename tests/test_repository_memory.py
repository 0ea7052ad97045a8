"""Node files stream: storing, packing and reading a 200 MB file keeps the process's peak memory low."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: The peak resident set may grow by at most this much while a 200 MB file is stored, packed and read back.
LIMIT_MB = 64
SIZE_MB = 200

SCRIPT = textwrap.dedent(
    '''
    import hashlib, io, json, os, resource, sys, time

    from sqlitedos import SqliteDosStorage, SqliteTempBackend
    from sqlitedos.repository.tree import NodeRepository

    kind, folder, size_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    CHUNK = 1024 * 1024


    class Generated(io.RawIOBase):
        """``size`` random bytes made one chunk at a time, hashed as they are handed out."""

        def __init__(self, size):
            self.left, self.digest = size, hashlib.sha256()

        def readable(self):
            return True

        def readinto(self, buffer):
            count = min(len(buffer), self.left, CHUNK)
            data = os.urandom(count)
            buffer[:count] = data
            self.digest.update(data)
            self.left -= count
            return count


    class Node:
        is_stored = False
        repository_metadata = {}

        def __init__(self, storage):
            self.backend = storage


    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


    if kind == 'dos':
        profile = SqliteDosStorage.create_profile('memory', filepath=folder, default_user_email='a@b.c')
        SqliteDosStorage.initialise(profile)
        storage = SqliteDosStorage(profile)
    else:
        storage = SqliteTempBackend(SqliteTempBackend.create_profile(filepath=folder))
    tree = NodeRepository(Node(storage))
    tree.put_object_from_bytes(b'warm up', 'small.txt')  # imports and opens everything before the baseline
    with tree.open('small.txt') as handle:
        handle.read()
    storage.maintain()
    baseline = peak_mb()

    timings = {}
    start = time.perf_counter()
    source = Generated(size_mb * CHUNK)
    tree.put_object_from_filelike(source, 'big.bin')
    timings['write_s'] = time.perf_counter() - start
    if kind == 'dos':
        start = time.perf_counter()
        storage.maintain()
        timings['pack_s'] = time.perf_counter() - start
    start = time.perf_counter()
    digest = hashlib.sha256()
    with tree.open('big.bin') as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b''):
            digest.update(chunk)
    timings['read_s'] = time.perf_counter() - start
    assert digest.hexdigest() == source.digest.hexdigest() == tree.get_object('big.bin').key
    result = {'baseline_mb': baseline, 'peak_mb': peak_mb(), **timings}
    storage.close()
    print(json.dumps(result))
    '''
)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['dos', 'temp'])
def test_200mb_file_streams(kind: str, tmp_path: Path) -> None:
    script = tmp_path / 'memory.py'
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), kind, str(tmp_path / 'storage'), str(SIZE_MB)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={'PYTHONPATH': str(Path(__file__).parent.parent), 'PATH': '/usr/bin:/bin'},
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth = figures['peak_mb'] - figures['baseline_mb']
    assert growth < LIMIT_MB, figures
