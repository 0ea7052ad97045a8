"""The programs the power-cut test runs on ``crashfs`` (run as ``python crash_workload.py MODE ROOT ACK ...``).

One process writes, so the acknowledgements have one order. Every line of the ``ACK`` file (outside the mount) is
written after the call it acknowledges has returned. The storage is closed and opened again after every
REOPEN pairs, as processes come and go; ``close()`` checkpoints the WAL into the database, so the run crosses
checkpoints (SQLite's own automatic one comes only every 1000 pages).

- ``write ROOT ACK N REOPEN``: store N pairs (``reliability_workers.store_pair``); ``pair <uuid>`` after each commit.
- ``pack ROOT ACK N REOPEN``: the same, with live ``maintain()`` after every 4th pair; ``packed <pairs>`` after each.
- ``import ROOT ACK ARCHIVE...``: import each archive in turn (reopening after each); ``import <index>`` after each.
- ``backup ROOT ACK N REOPEN DEST``: store pairs, and back up into DEST after every 3rd; ``backup <name>``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reliability_workers as workers  # noqa: E402

PACK_EVERY = 4
BACKUP_EVERY = 3


class Workload:
    """One writer process: its storage (reopened now and then) and its acknowledgement log."""

    def __init__(self, root: str, log: TextIO, reopen: int = 0) -> None:
        self.root = root
        self.log = log
        self.reopen = reopen
        self.storage = workers.open_storage(root)

    def acknowledge(self, line: str) -> None:
        self.log.write(line + '\n')
        self.log.flush()

    def store_pairs(self, count: int, every: int = 0, after: str = '', destination: str = '') -> None:
        for index in range(count):
            self.acknowledge('pair ' + workers.store_pair(self.storage, f'crash-{index}'))
            if every and (index + 1) % every == 0:
                if after == 'pack':
                    self.storage.maintain()
                    self.acknowledge(f'packed {index + 1}')
                else:
                    self.acknowledge(f'backup {self.storage.backup(destination).name}')
            if (index + 1) % self.reopen == 0:
                self.storage.close()
                self.storage = workers.open_storage(self.root)

    def import_archives(self, archives: list[str]) -> None:
        from sqlitedos.archive import import_archive

        for index, archive in enumerate(archives):
            import_archive(self.storage, archive)
            self.acknowledge(f'import {index}')
            self.storage.close()
            self.storage = workers.open_storage(self.root)


def main(argv: list[str]) -> None:
    mode, root, ack, *rest = argv
    with open(ack, 'a', encoding='utf-8') as log:
        if mode == 'import':
            work = Workload(root, log)
            work.import_archives(rest)
        else:
            work = Workload(root, log, int(rest[1]))
        if mode == 'write':
            work.store_pairs(int(rest[0]))
        elif mode == 'pack':
            work.store_pairs(int(rest[0]), PACK_EVERY, 'pack')
        elif mode == 'backup':
            work.store_pairs(int(rest[0]), BACKUP_EVERY, 'backup', rest[2])
        elif mode != 'import':
            raise SystemExit(f'unknown mode {mode!r}')
        work.storage.close()


if __name__ == '__main__':
    main(sys.argv[1:])
