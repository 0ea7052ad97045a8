"""The repository backends (disk-objectstore adapter and sha256 sandbox) against one contract."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sqlitedos.exceptions import ClosedStorage, CorruptStorage, InputValidationError, NotExistent
from sqlitedos.repository.abstract import AbstractRepositoryBackend, NotAByteStreamError, ObjectNotFoundError
from sqlitedos.repository.disk_objectstore import DiskObjectStoreRepositoryBackend
from sqlitedos.repository.sandbox import SandboxShaRepositoryBackend

EMPTY_KEY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture(params=['disk-objectstore', 'sandbox'])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AbstractRepositoryBackend]:
    """Each repository backend, initialised in a private folder."""
    if request.param == 'sandbox':
        repository: Any = SandboxShaRepositoryBackend(tmp_path / 'sandbox')
    else:
        repository = DiskObjectStoreRepositoryBackend(tmp_path / 'container')
    repository.initialise()
    yield repository
    if isinstance(repository, DiskObjectStoreRepositoryBackend):
        repository.close()
    else:
        repository.erase()


def corrupt(backend: AbstractRepositoryBackend, key: str, content: bytes) -> None:
    """Overwrite the stored file of the loose object ``key`` with other content."""
    if isinstance(backend, SandboxShaRepositoryBackend):
        path = backend.sandbox / key
    else:
        path = backend._folder / 'loose' / key[:2] / key[2:]  # type: ignore[attr-defined]
    path.write_bytes(content)


def test_put_and_read_back(backend: AbstractRepositoryBackend) -> None:
    key = backend.put_object_from_filelike(io.BytesIO(b'hello'))
    assert key == sha256(b'hello')
    assert backend.key_format == 'sha256'
    assert backend.has_object(key)
    assert backend.get_object_content(key) == b'hello'
    with backend.open(key) as handle:
        assert handle.read(2) == b'he'
        assert handle.read() == b'llo'
    assert backend.get_object_hash(key) == key
    assert list(backend.list_objects()) == [key]


def test_empty_content_and_dedup(backend: AbstractRepositoryBackend) -> None:
    assert backend.put_object_from_filelike(io.BytesIO(b'')) == EMPTY_KEY
    keys = {backend.put_object_from_filelike(io.BytesIO(b'same')) for _ in range(20)}
    assert keys == {sha256(b'same')}
    assert sorted(backend.list_objects()) == sorted([EMPTY_KEY, sha256(b'same')])


def test_put_object_from_file(backend: AbstractRepositoryBackend, tmp_path: Path) -> None:
    path = tmp_path / 'file.bin'
    path.write_bytes(b'\x00\x01' * 1000)
    assert backend.put_object_from_file(path) == sha256(path.read_bytes())


def test_has_objects_in_order(backend: AbstractRepositoryBackend) -> None:
    key = backend.put_object_from_filelike(io.BytesIO(b'x'))
    assert backend.has_objects([sha256(b'y'), key, 'not-a-key']) == [False, True, False]


def test_iter_object_streams(backend: AbstractRepositoryBackend) -> None:
    contents = {sha256(c): c for c in (b'a', b'bb', b'ccc')}
    for content in contents.values():
        backend.put_object_from_filelike(io.BytesIO(content))
    seen = {key: stream.read() for key, stream in backend.iter_object_streams(list(contents))}
    assert seen == contents


def test_iter_object_streams_missing(backend: AbstractRepositoryBackend) -> None:
    with pytest.raises(ObjectNotFoundError):
        list(backend.iter_object_streams([sha256(b'absent')]))


def test_delete(backend: AbstractRepositoryBackend) -> None:
    key_a = backend.put_object_from_filelike(io.BytesIO(b'a'))
    key_b = backend.put_object_from_filelike(io.BytesIO(b'b'))
    with pytest.raises(FileNotFoundError, match=sha256(b'c')):
        backend.delete_objects([key_a, sha256(b'c')])
    assert backend.has_objects([key_a, key_b]) == [True, True]  # nothing deleted when one key is missing
    backend.delete_object(key_a)
    assert backend.has_objects([key_a, key_b]) == [False, True]


@pytest.mark.parametrize('handle', [io.StringIO('text'), 'a string', b'bytes'], ids=['StringIO', 'str', 'bytes'])
def test_non_binary_handle_is_refused(backend: AbstractRepositoryBackend, handle: Any) -> None:
    with pytest.raises(NotAByteStreamError, match='binary'):
        backend.put_object_from_filelike(handle)
    assert issubclass(NotAByteStreamError, TypeError)  # aiida raises TypeError


def test_text_file_handle_is_refused(backend: AbstractRepositoryBackend, tmp_path: Path) -> None:
    path = tmp_path / 'text.txt'
    path.write_text('text')
    with open(path) as handle, pytest.raises(TypeError):
        backend.put_object_from_filelike(handle)


def test_missing_key(backend: AbstractRepositoryBackend) -> None:
    missing = sha256(b'missing')
    with pytest.raises(ObjectNotFoundError, match=missing):
        backend.get_object_content(missing)
    with pytest.raises(NotExistent):
        backend.get_object_hash(missing)
    with pytest.raises(FileNotFoundError):  # aiida's contract
        with backend.open(missing):
            pass


@pytest.mark.parametrize('key', ['../../etc/passwd', 'ABC', '', 'e3b0' * 17])
def test_invalid_key(backend: AbstractRepositoryBackend, key: str) -> None:
    with pytest.raises(InputValidationError, match='invalid repository key'):
        backend.get_object_content(key)


def test_corrupted_loose_object(backend: AbstractRepositoryBackend) -> None:
    key = backend.put_object_from_filelike(io.BytesIO(b'original content'))
    corrupt(backend, key, b'tampered content')
    with pytest.raises(CorruptStorage, match=f'{key} is corrupt'):
        backend.get_object_content(key)
    with pytest.raises(CorruptStorage), backend.open(key) as handle:
        while handle.read(4):
            pass
    with pytest.raises(CorruptStorage):
        for _, stream in backend.iter_object_streams([key]):
            stream.read()


def test_partial_read_and_seek_are_not_checked(backend: AbstractRepositoryBackend) -> None:
    key = backend.put_object_from_filelike(io.BytesIO(b'0123456789'))
    with backend.open(key) as handle:
        handle.seek(5)
        assert handle.read() == b'56789'
        handle.seek(0)
        assert handle.read() == b'0123456789'


def test_sandbox_specifics(tmp_path: Path) -> None:
    sandbox = SandboxShaRepositoryBackend(tmp_path / 'where')
    assert sandbox.uuid is None
    assert sandbox._filepath == str(tmp_path / 'where')
    assert sandbox._sandbox is None and not sandbox.is_initialised  # created on first use
    key = sandbox.put_object_from_filelike(io.BytesIO(b'abc'))
    folder = sandbox._sandbox
    assert folder is not None and folder.parent == tmp_path / 'where'
    assert [p.name for p in folder.iterdir()] == [key]  # flat, named by key, no partial files left
    assert sandbox.get_info() == {'objects': {'count': 1}}
    assert sandbox.get_info(detailed=True) == {'objects': {'count': 1}}
    assert sandbox.maintain(dry_run=False, live=False) is None
    sandbox.erase()
    assert not folder.exists() and sandbox.get_info() == {'objects': {'count': 0}}


def test_sandbox_failed_write_leaves_nothing(tmp_path: Path) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError('disk on fire')

    sandbox = SandboxShaRepositoryBackend(tmp_path)
    with pytest.raises(OSError, match='disk on fire'):
        sandbox.put_object_from_filelike(Broken())
    assert list(sandbox.sandbox.iterdir()) == []


def test_disk_objectstore_specifics(tmp_path: Path) -> None:
    backend = DiskObjectStoreRepositoryBackend(tmp_path / 'container')
    assert not backend.is_initialised and backend.uuid is None
    backend.initialise()
    try:
        assert backend.is_initialised and len(backend.uuid or '') == 32
        key = backend.put_object_from_filelike(io.BytesIO(b'packed'))
        info = backend.get_info()
        assert info == {
            'SHA-hash algorithm': 'sha256',
            'Compression algorithm': 'zlib+1',
            'Objects': {'packed': 0, 'loose': 1, 'pack_files': 0},
        }
        backend.maintain(live=True)
        assert backend.get_info()['Objects'] == {'packed': 1, 'loose': 0, 'pack_files': 1}
        assert set(backend.get_info(detailed=True)['Size (MB)']) == {
            'total_size_packed',
            'total_size_packed_on_disk',
            'total_size_packfiles_on_disk',
            'total_size_packindexes_on_disk',
            'total_size_loose',
        }
        assert backend.get_object_content(key) == b'packed'
        with pytest.raises(ValueError, match='do_repack'):
            backend.maintain(live=True, do_repack=True)
        backend.maintain(live=False, compress=True)
        assert backend.get_object_content(key) == b'packed'
    finally:
        backend.erase()
    assert not (tmp_path / 'container').exists()
    backend.erase()  # missing is fine


def test_maintain_reports_corrupt_loose_object(tmp_path: Path) -> None:
    backend = DiskObjectStoreRepositoryBackend(tmp_path / 'container')
    backend.initialise()
    try:
        key = backend.put_object_from_filelike(io.BytesIO(b'original'))
        corrupt(backend, key, b'changed!')
        with pytest.raises(CorruptStorage, match='corrupt object'):
            backend.maintain(live=True)
    finally:
        backend.close()


def test_import_sqlitedos_does_not_import_disk_objectstore() -> None:
    code = (
        'import sys, sqlitedos, sqlitedos.repository.disk_objectstore, sqlitedos.repository.tree; '
        "print('disk_objectstore' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ['False', 'False']


def test_storages_give_their_repository(storage: Any) -> None:
    repository = storage.get_repository()
    assert repository is storage.get_repository()
    assert repository.key_format == 'sha256'
    key = repository.put_object_from_filelike(io.BytesIO(b'in storage'))
    assert repository.get_object_content(key) == b'in storage'
    storage.maintain()
    storage.maintain(dry_run=True)
    assert repository.get_object_content(key) == b'in storage'


def test_temp_storage_erases_its_sandbox_on_close(temp_storage: Any) -> None:
    repository = temp_storage.get_repository()
    repository.put_object_from_filelike(io.BytesIO(b'gone soon'))
    folder = repository._sandbox
    assert folder is not None and folder.is_dir()
    assert temp_storage._repository_info(True) == {}
    assert 'repository' not in temp_storage.get_info(detailed=True)  # as aiida's temp storage
    temp_storage.close()
    assert not folder.exists()


def test_dos_storage_repository_is_its_container(dos_storage: Any) -> None:
    repository = dos_storage.get_repository()
    assert repository.uuid == dos_storage.get_global_variable('repository|uuid')
    assert dos_storage._repository_info(False)['Objects'] == {'packed': 0, 'loose': 0, 'pack_files': 0}
    assert 'Size (MB)' in dos_storage._repository_info(True)
    repository.put_object_from_filelike(io.BytesIO(b'one object'))
    assert dos_storage.get_info()['repository'] == {
        'SHA-hash algorithm': 'sha256',
        'Compression algorithm': 'zlib+1',
        'Objects': {'packed': 0, 'loose': 1, 'pack_files': 0},
    }
    sizes = dos_storage.get_info(detailed=True)['repository']['Size (MB)']
    assert sizes['total_size_loose'] == 0.0 and all(isinstance(value, float) for value in sizes.values())


def test_threads_write_and_read_through_one_storage(storage: Any) -> None:
    contents = [f'thread {t} file {i}'.encode() for t in range(4) for i in range(50)]

    def work(thread: int) -> list[bool]:
        repository = storage.get_repository()  # first asked for from several threads at once
        mine = contents[thread * 50 : (thread + 1) * 50]
        keys = [repository.put_object_from_filelike(io.BytesIO(content)) for content in mine]
        return [repository.get_object_content(key) == content for key, content in zip(keys, mine)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    assert all(all(result) for result in results)
    assert sorted(storage.get_repository().list_objects()) == sorted({sha256(content) for content in contents})


def test_container_created_anew_is_reopened(tmp_path: Path) -> None:
    from sqlitedos.repository.disk_objectstore import init_container

    backend = DiskObjectStoreRepositoryBackend(tmp_path / 'container')
    backend.initialise()
    try:
        old = backend.put_object_from_filelike(io.BytesIO(b'old'))
        first_uuid = backend.uuid
        shutil.rmtree(tmp_path / 'container')
        init_container(tmp_path / 'container')
        assert backend.uuid != first_uuid
        assert not backend.has_object(old)
        new = backend.put_object_from_filelike(io.BytesIO(b'new'))
        assert list(backend.list_objects()) == [new]
    finally:
        backend.close()


def test_closed_storage_gives_no_repository(storage: Any) -> None:
    storage.get_repository().put_object_from_filelike(io.BytesIO(b'x'))
    storage.close()
    with pytest.raises(ClosedStorage):
        storage.get_repository()


@pytest.mark.parametrize('compress', [False, True], ids=['plain-pack', 'compressed-pack'])
def test_packed_objects_read_seek_and_verify(tmp_path: Path, compress: bool) -> None:
    backend = DiskObjectStoreRepositoryBackend(tmp_path / 'container')
    backend.initialise()
    try:
        contents = [bytes([index]) * (1000 + index) for index in range(5)]
        keys = [backend.put_object_from_filelike(io.BytesIO(content)) for content in contents]
        backend.maintain(live=False, compress=compress)
        assert backend.get_info()['Objects']['loose'] == 0
        for key, content in zip(keys, contents):
            assert backend.get_object_content(key) == content
        with backend.open(keys[2]) as handle:
            assert handle.read(10) == contents[2][:10]
            handle.seek(-4, io.SEEK_END)
            assert handle.read() == contents[2][-4:]
            handle.seek(0)
            assert handle.read() == contents[2]
        assert {key: stream.read() for key, stream in backend.iter_object_streams(keys)} == dict(zip(keys, contents))
        if not compress:  # tamper with the pack: the slice no longer hashes to its key
            pack = tmp_path / 'container' / 'packs' / '0'
            pack.write_bytes(bytes(byte ^ 0xFF for byte in pack.read_bytes()))
            with pytest.raises(CorruptStorage, match='is corrupt'):
                backend.get_object_content(keys[-1])
    finally:
        backend.close()
