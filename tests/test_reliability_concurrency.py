"""Several processes on one folder storage: writers, readers and live packing at once, nothing lost or half seen."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import reliability_workers as workers

from sqlitedos.verify import verify

WORKERS = Path(__file__).parent / 'reliability_workers.py'
SECONDS = 20.0
WRITERS = 4
READERS = 4


def start(mode: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKERS), mode, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str]) -> None:
    stdout, stderr = process.communicate(timeout=SECONDS + 120)
    assert process.returncode == 0, stderr


@pytest.mark.slow
def test_writers_readers_and_live_packing_together(dos_storage: Any, tmp_path: Path) -> None:
    root = str(dos_storage.filepath_root)
    writer_logs = [tmp_path / f'writer{index}.log' for index in range(WRITERS)]
    reader_logs = [tmp_path / f'reader{index}.log' for index in range(READERS)]
    processes = [start('writer', root, str(SECONDS), str(log), f'w{index}') for index, log in enumerate(writer_logs)]
    processes += [start('reader', root, str(SECONDS), str(log), f'r{index}') for index, log in enumerate(reader_logs)]
    packs = []
    stop = threading.Event()

    def pack() -> None:  # live maintenance from this process, all the while
        while not stop.is_set():
            packs.append(dos_storage.maintain())
            time.sleep(0.5)

    packer = threading.Thread(target=pack)
    started = time.monotonic()
    packer.start()
    try:
        for process in processes:
            finish(process)
    finally:
        stop.set()
        packer.join()
    elapsed = time.monotonic() - started

    lines = [line for log in writer_logs for line in log.read_text().splitlines()]
    errors = [line for line in lines if not line.startswith('ok ')]
    assert errors == []
    stored = [line.split()[1] for line in lines]
    reads = []
    for log in reader_logs:
        reader_lines = log.read_text().splitlines()
        assert [line for line in reader_lines if not line.startswith('reads ')] == []
        reads.append(int(reader_lines[-1].split()[1]))

    assert dos_storage.nodes.count() == 2 * len(stored)  # each store is a pair
    assert workers.half_pairs(dos_storage) == (0, 0)
    for uuid in stored:
        assert workers.check_data_node(dos_storage, uuid) == []
    dos_storage.maintain()
    report = verify(dos_storage)
    assert report.ok, report.problems
    assert len(packs) > 3 and all(reads)
    print(
        f'\n{len(stored)} pair stores ({len(stored) / elapsed:.1f}/s), {sum(reads)} reader rounds '
        f'({sum(reads) / elapsed:.1f}/s), {len(packs)} live packs in {elapsed:.1f} s'
    )
