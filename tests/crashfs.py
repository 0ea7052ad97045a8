"""A FUSE file system that knows which writes would survive a power cut, and photographs that state at cut points.

Run as ``python crashfs.py BACKING MOUNT CUTS --seed S --mean-gap G [--ack FILE]`` (a test helper; not collected).
``BACKING/root`` holds what every process sees (the page cache, so to say); all operations pass through to it. Beside
it the file system keeps the *durable* state, the one a power cut would leave:

- file data: ``BACKING/shadow/<inode>`` holds each file's content as of its last ``fsync``/``fdatasync``; writes and
  truncations since then are only remembered as dirty ranges. A file never synced has no durable content (empty).
- directory entries (create, rename, unlink, link, mkdir, rmdir): durable for a directory when that directory is
  ``fsync``ed (what POSIX and ``fsync(2)`` ask of a program); until then the durable entries are the old ones.
  Removed inodes are kept alive in ``BACKING/grave`` so an inode number named by a durable entry is never reused.

The *cut* schedule is seeded: mutating operations (write, truncate, fallocate, fsync, fsyncdir, create, mkdir,
unlink, rmdir, rename, link, symlink) are numbered, and just before the operation numbered at each cut point the
durable state is written out (under the one lock every operation takes, so no operation is half applied) as two
folders, the two extremes a real file system may leave:

- ``posix``: only what was synced: durable directory entries and durable file data. Harsher than ext4, XFS or
  btrfs for directory entries, which on those are also made durable by journal commits.
- ``journal``: every directory operation up to the cut (as if the journal had committed just then), with file
  data only as far as it was synced: a renamed or new file whose data was never synced is empty or short, and an
  unlink is final. Harsher than ext4 ``data=ordered`` (which writes the data of new blocks before the metadata that
  names them) and equal to ext4 ``data=writeback``/XFS after a crash.

Not modelled: pending writes that partly reach the disk (torn writes, a subset of pages), and journal commits at
earlier points than the cut; both lie between the two extremes for the promises tested (each kept data byte was
written by the program; each lost byte was never synced). Each cut appends one JSON line to ``CUTS/cuts.jsonl``:
the cut number, the operation number and name, and how many complete lines the acknowledgement file (``--ack``,
outside the mount) held at that moment: every line there was written after the operations it acknowledges had
returned, so those operations all lie before the cut. ``synced_acks`` gives, per file, how many lines it held when
that file's last fsync began (what SQLite's checkpoints made durable).

Making a folder named ``.crashfs-cut`` anywhere also cuts there (the harness's own test uses it).

Locks (``fcntl``, ``flock``) are left to the kernel, which handles them locally when a FUSE file system does not.
Cuts do not stop the programs; the photographed state is checked afterwards, so one run yields many cuts.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import mfusepy

#: The fields of ``os.stat_result`` FUSE wants back from ``getattr`` (times as nanoseconds, ``use_ns``).
STAT_FIELDS = ('st_mode', 'st_ino', 'st_nlink', 'st_uid', 'st_gid', 'st_size', 'st_blocks', 'st_blksize', 'st_rdev')
TIME_FIELDS = ('st_atime', 'st_mtime', 'st_ctime')
COPY_CHUNK = 1 << 20
#: A folder of this name, when made, photographs the durable state just before it exists (a cut on demand).
CUT_NOW = '.crashfs-cut'


def _backing_flags(flags: int) -> int:
    """The flags to open the backing file with: readable whenever writable (a sync copies the dirty ranges from it),
    and without O_APPEND (the kernel gives the offset of an appending write, and ``pwrite`` on an O_APPEND descriptor
    would ignore it on Linux, so the dirty range would be wrong)."""
    if flags & os.O_ACCMODE == os.O_WRONLY:
        flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    return flags & ~os.O_APPEND


class CrashFS(mfusepy.Operations):
    """Pass-through operations over ``backing/root`` that also keep the durable state (see the module docstring)."""

    use_ns = True

    def __init__(self, backing: Path, cuts: Path, seed: int, mean_gap: int, ack: Path | None) -> None:
        self.root = str(backing / 'root')
        self.grave = backing / 'grave'
        self.shadow = backing / 'shadow'
        self.cuts = cuts
        self.ack = ack
        self.mutex = threading.RLock()
        self.rng = random.Random(seed)
        self.mean_gap = mean_gap
        self.ops = 0
        self.cut_count = 0
        self.next_cut = self._gap()
        self.dirty: dict[int, list[tuple[int, int]]] = {}
        self.truncated: dict[int, int] = {}  # inode -> smallest size it was cut to since its last sync
        self.durable_dirs: dict[int, dict[str, tuple[int, str, str]]] = {}  # inode -> name -> (inode, kind, link)
        self.fds: dict[int, int] = {}  # open descriptor -> inode
        self.synced_acks: dict[str, int] = {}  # path -> acknowledgements written before its last fsync began
        for folder in (self.grave, self.shadow, self.cuts):
            folder.mkdir(parents=True, exist_ok=True)
        self._adopt_existing()

    # --- the durable model --------------------------------------------------------------------------------------

    def _gap(self) -> int:
        return self.rng.randint(1, 2 * self.mean_gap - 1)

    def _real(self, path: str) -> str:
        return self.root + path

    def _adopt_existing(self) -> None:
        """What is in ``root`` when the file system starts counts as durable."""
        for folder, _, files in os.walk(self.root):
            self._sync_dir(folder)
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    shutil.copyfile(path, self.shadow / str(os.lstat(path).st_ino))

    def _entries(self, folder: str) -> dict[str, tuple[int, str, str]]:
        entries = {}
        with os.scandir(folder) as it:
            for entry in it:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    entries[entry.name] = (info.st_ino, 'd', '')
                elif stat.S_ISLNK(info.st_mode):
                    entries[entry.name] = (info.st_ino, 'l', os.readlink(entry.path))
                elif stat.S_ISREG(info.st_mode):
                    entries[entry.name] = (info.st_ino, 'f', '')
        return entries

    def _sync_dir(self, folder: str) -> None:
        self.durable_dirs[os.lstat(folder).st_ino] = self._entries(folder)

    def _sync_file(self, fd: int, inode: int) -> None:
        size = os.fstat(fd).st_size
        target = self.shadow / str(inode)
        with open(target, 'ab') as handle:  # create it empty if the file was never synced
            pass
        with open(target, 'r+b') as handle:
            out = handle.fileno()
            if inode in self.truncated:
                os.ftruncate(out, min(self.truncated.pop(inode), size))
            os.ftruncate(out, min(os.fstat(out).st_size, size))
            for start, end in self.dirty.pop(inode, []):
                start, end = min(start, size), min(end, size)
                while start < end:
                    chunk = os.pread(fd, min(COPY_CHUNK, end - start), start)
                    if not chunk:
                        break
                    os.pwrite(out, chunk, start)
                    start += len(chunk)
            os.ftruncate(out, size)

    def _bury(self, real: str) -> None:
        """Keep a removed inode alive, so that its number (maybe named by a durable entry) is not reused."""
        try:
            info = os.lstat(real)
        except FileNotFoundError:
            return
        grave = self.grave / str(info.st_ino)
        if os.path.lexists(grave):
            return
        if stat.S_ISDIR(info.st_mode):
            os.rename(real, grave)
        else:
            os.link(real, grave, follow_symlinks=False)

    def _count(self, what: str) -> None:
        """Number a mutating operation; at a cut point, photograph the durable state first."""
        self.ops += 1
        if self.ops == self.next_cut:
            self._photograph(what)
            self.next_cut = self.ops + self._gap()

    def _acknowledged(self) -> int:
        if self.ack is None or not self.ack.exists():
            return 0
        return self.ack.read_bytes().count(b'\n')

    def _photograph(self, what: str) -> None:
        acks = self._acknowledged()
        folder = self.cuts / f'cut{self.cut_count:04d}'
        self._write_tree(folder / 'posix', self.durable_dirs, os.lstat(self.root).st_ino, {})
        self._write_tree(folder / 'journal', None, os.lstat(self.root).st_ino, {})
        record = {'cut': self.cut_count, 'op': self.ops, 'what': what, 'acks': acks, 'folder': folder.name}
        record['synced_acks'] = dict(self.synced_acks)
        with open(self.cuts / 'cuts.jsonl', 'a', encoding='utf-8') as log:
            log.write(json.dumps(record) + '\n')
        self.cut_count += 1

    def _write_tree(self, out: Path, durable: dict | None, inode: int, seen: dict[int, Path], path: str = '') -> None:
        out.mkdir(parents=True)
        if durable is None:
            entries = self._entries(self.root + path)
        else:
            entries = durable.get(inode, {})
        for name, (child, kind, link) in entries.items():
            target = out / name
            if kind == 'd':
                self._write_tree(target, durable, child, seen, f'{path}/{name}')
            elif kind == 'l':
                os.symlink(link, target)
            elif child in seen:
                os.link(seen[child], target)
            else:
                source = self.shadow / str(child)
                if source.exists():
                    shutil.copyfile(source, target)
                else:
                    target.touch()
                seen[child] = target

    # --- pass-through operations --------------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        info = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
        attrs = {key: getattr(info, key) for key in STAT_FIELDS}
        attrs.update({key: getattr(info, key + '_ns') for key in TIME_FIELDS})
        return attrs

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # Each entry with its inode number: with use_ino, an entry of inode 0 would read as a deleted one.
        real = self._real(path)
        entries = [('.', os.lstat(real)), ('..', os.lstat(os.path.dirname(real) if path != '/' else real))]
        with os.scandir(real) as it:
            entries.extend((entry.name, entry.stat(follow_symlinks=False)) for entry in it)
        return [(name, {'st_mode': info.st_mode, 'st_ino': info.st_ino}, 0) for name, info in entries]

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def statfs(self, path: str) -> dict[str, int]:
        info = os.statvfs(self._real(path))
        keys = ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize', 'f_favail', 'f_ffree', 'f_files', 'f_flag', 'f_frsize')
        return {key: getattr(info, key) for key in keys} | {'f_namemax': info.f_namemax}

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        os.utime(self._real(path), ns=times)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self.mutex:
            self._count(f'mkdir {path}')
            if os.path.basename(path) == CUT_NOW:
                self._photograph(f'mkdir {path}')
            os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        with self.mutex:
            self._count(f'rmdir {path}')
            real = self._real(path)
            if os.listdir(real):
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            self._bury(real)
            if os.path.lexists(real):
                os.rmdir(real)
        return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            self._count(f'unlink {path}')
            self.synced_acks.pop(path, None)
            real = self._real(path)
            self._bury(real)
            os.unlink(real)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self.mutex:
            self._count(f'rename {old} {new}')
            self.synced_acks.pop(old, None)
            target = self._real(new)
            if os.path.isdir(target) and not os.path.islink(target) and os.listdir(target):
                raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            self._bury(target)  # the replaced inode (a directory is moved away, leaving the name free)
            os.rename(self._real(old), target)
        return 0

    def link(self, target: str, source: str) -> int:
        with self.mutex:
            self._count(f'link {source} {target}')
            os.link(self._real(source), self._real(target))
        return 0

    def symlink(self, target: str, source: str) -> int:
        with self.mutex:
            self._count(f'symlink {target}')
            os.symlink(source, self._real(target))
        return 0

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            if flags & os.O_TRUNC:  # the kernel passes O_TRUNC on (atomic_o_trunc): a truncation to 0
                self._count(f'open-truncate {path}')
            fd = os.open(self._real(path), _backing_flags(flags) & ~(os.O_CREAT | os.O_EXCL))
            inode = self.fds[fd] = os.fstat(fd).st_ino
            if flags & os.O_TRUNC:
                self.truncated[inode] = 0
        return fd

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        with self.mutex:
            self._count(f'create {path}')
            fd = os.open(self._real(path), _backing_flags(flags) | os.O_CREAT, mode)
            self.fds[fd] = os.fstat(fd).st_ino
        return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self.mutex:
            self._count(f'write {path} {offset} {len(data)}')
            written = os.pwrite(fh, data, offset)
            self.dirty.setdefault(self.fds[fh], []).append((offset, offset + written))
        return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self.mutex:
            self._count(f'truncate {path} {length}')
            if fh is None:
                real = self._real(path)
                inode = os.lstat(real).st_ino
                os.truncate(real, length)
            else:
                inode = self.fds[fh]
                os.ftruncate(fh, length)
            self.truncated[inode] = min(self.truncated.get(inode, length), length)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        if mode != 0:
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
        with self.mutex:
            self._count(f'fallocate {path} {offset} {size}')
            os.posix_fallocate(fh, offset, size)
            self.dirty.setdefault(self.fds[fh], []).append((offset, offset + size))
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self._count(f'fsync {path}')
            acks = self._acknowledged()
            self._sync_file(fh, self.fds[fh])
            self.synced_acks[path] = acks
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self.mutex:
            self._count(f'fsyncdir {path}')
            self._sync_dir(self._real(path))
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        with self.mutex:
            self.fds.pop(fh, None)
            os.close(fh)
        return 0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('backing', type=Path)
    parser.add_argument('mount')
    parser.add_argument('cuts', type=Path)
    parser.add_argument('--seed', type=int, required=True)
    parser.add_argument('--mean-gap', type=int, required=True)
    parser.add_argument('--ack', type=Path)
    args = parser.parse_args(argv)
    ack = args.ack.resolve() if args.ack else None
    operations = CrashFS(args.backing.resolve(), args.cuts.resolve(), args.seed, args.mean_gap, ack)
    # hard_remove: unlink at once instead of renaming open files to .fuse_hidden (the entries are the model);
    # use_ino: the kernel sees the backing inode numbers (SQLite keys its locks on them).
    mfusepy.FUSE(operations, args.mount, foreground=True, hard_remove=True, use_ino=True, fsname='crashfs')


if __name__ == '__main__':
    main(sys.argv[1:])
