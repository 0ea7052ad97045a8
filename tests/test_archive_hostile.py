"""Hostile archives (built to exhaust memory, disk or the parser): each is refused with one clear error before it
costs much, and nothing in the storage changes. Honest large members still stream.

Memory and temporary disk are measured in a child process whose ``TMPDIR`` is a 100 MB tmpfs: an import that wrote
more there would fail with ENOSPC instead of the expected refusal.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mounts import small_tmpfs

from sqlitedos import SqliteDosStorage
from sqlitedos.archive import create_archive, import_archive
from sqlitedos.archive.format import METADATA_MAX_BYTES
from sqlitedos.archive.zipio import MAX_COMPRESSION_RATIO, RATIO_FREE_BYTES
from sqlitedos.cli import cli
from sqlitedos.db import JSON_MAX_DEPTH
from sqlitedos.exceptions import CorruptStorage, ImportValidationError
from tests.test_archive_bad_input import assert_refused, with_database
from tests.test_archive_export import build_graph

MIB = 1024 * 1024


@pytest.fixture
def populated(storage: Any) -> Any:
    """A storage with some content of its own, so "unchanged" means something."""
    build_graph(storage)
    return storage


def write_archive(source: Path, target: Path, replace: dict[str, Any]) -> Path:
    """A copy of ``source`` where each member named in ``replace`` gets new content: bytes, or an iterator of chunks
    (streamed into the zip, so a test never holds a large member in memory)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, 'w', zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            content = replace.get(info.filename, None)
            if content is None:
                new.writestr(info.filename, old.read(info.filename))
            elif isinstance(content, bytes):
                new.writestr(info.filename, content)
            else:
                with new.open(info.filename, 'w', force_zip64=True) as handle:
                    for chunk in content:
                        handle.write(chunk)
    return target


def zeros(total: int, prefix: bytes = b'') -> Iterator[bytes]:
    yield prefix
    for _ in range(total // MIB):
        yield bytes(MIB)


def declare_size(path: Path, name: str, size: int) -> None:
    """Overwrite the uncompressed size that the central directory (and local header) declare for member ``name``."""
    data = bytearray(path.read_bytes())
    end = data.rfind(b'PK\x05\x06')
    (offset,) = struct.unpack_from('<L', data, end + 16)
    while data[offset : offset + 4] == b'PK\x01\x02':
        name_length, extra_length, comment_length = struct.unpack_from('<3H', data, offset + 28)
        (local,) = struct.unpack_from('<L', data, offset + 42)
        if data[offset + 46 : offset + 46 + name_length].decode() == name:
            extra = bytes(data[offset + 46 + name_length : offset + 46 + name_length + extra_length])
            assert struct.unpack_from('<L', data, offset + 24)[0] != 0xFFFFFFFF or extra  # no zip64 sizes to patch
            struct.pack_into('<L', data, offset + 24, size)
            struct.pack_into('<L', data, local + 22, size)
            if extra[:2] == b'\x01\x00':  # zip64 extra: the sizes live there
                struct.pack_into('<Q', data, offset + 46 + name_length + 4, size)
                struct.pack_into('<L', data, offset + 24, 0xFFFFFFFF)
            break
        offset += 46 + name_length + extra_length + comment_length
    else:
        raise AssertionError(f'no member {name!r}')
    path.write_bytes(bytes(data))


def database_of(archive: Path) -> bytes:
    with zipfile.ZipFile(archive) as handle:
        return handle.read('db.sqlite3')


# --- metadata.json --------------------------------------------------------------------------------------------------


def test_metadata_nested_a_million_deep_is_refused(populated: Any, fixture_archive_path: Path, tmp_path: Path) -> None:
    deep = b'{"export_version": ' + b'[' * 10**6 + b']' * 10**6 + b'}'
    path = write_archive(fixture_archive_path, tmp_path / 'deep.aiida', {'metadata.json': deep})
    assert_refused(populated, path, CorruptStorage, f'nests deeper than {JSON_MAX_DEPTH}')
    result = CliRunner().invoke(cli, ['archive', 'inspect', str(path)])
    assert result.exit_code == 1 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith('Error: ') and 'RecursionError' not in result.output + result.stderr


def test_metadata_past_the_size_cap_is_refused_unread(
    populated: Any, fixture_archive_path: Path, tmp_path: Path
) -> None:
    metadata = json.loads(zipfile.ZipFile(fixture_archive_path).read('metadata.json'))
    text = json.dumps(metadata).encode()
    padded = zeros(METADATA_MAX_BYTES, text[:-1] + b', "padding": "')
    body = iter([*padded, b'"}'])
    path = write_archive(fixture_archive_path, tmp_path / 'big-metadata.aiida', {'metadata.json': body})
    assert path.stat().st_size < 2 * MIB
    assert_refused(populated, path, CorruptStorage, 'metadata.json .* more than the')


# --- members that inflate past what they may ------------------------------------------------------------------------


def test_honestly_declared_zip_bomb_is_refused_before_extraction(
    populated: Any, fixture_archive_path: Path, tmp_path: Path
) -> None:
    database = database_of(fixture_archive_path)
    bomb = zeros(RATIO_FREE_BYTES + 16 * MIB, database)
    path = write_archive(fixture_archive_path, tmp_path / 'bomb.aiida', {'db.sqlite3': bomb})
    assert_refused(populated, path, CorruptStorage, f'more than {MAX_COMPRESSION_RATIO} times')


def test_zip_bomb_among_the_objects_is_refused_before_any_object_is_written(
    populated: Any, fixture_archive_path: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(fixture_archive_path) as handle:
        last = [name for name in handle.namelist() if name.startswith('repo/')][-1]
    bomb = zeros(RATIO_FREE_BYTES + 16 * MIB)
    path = write_archive(fixture_archive_path, tmp_path / 'object-bomb.aiida', {last: bomb})
    assert_refused(populated, path, CorruptStorage, f'{last}.* more than {MAX_COMPRESSION_RATIO} times')


@pytest.mark.parametrize('body', ['zeros', 'random'])
def test_member_larger_than_declared_is_refused_at_once(
    populated: Any, fixture_archive_path: Path, tmp_path: Path, body: str
) -> None:
    """A member claiming 4096 bytes: refused as soon as byte 4097 comes out (inflated in one go or streamed)."""
    database = database_of(fixture_archive_path)
    content = zeros(32 * MIB, database) if body == 'zeros' else iter([database, os.urandom(3 * MIB)])
    path = write_archive(fixture_archive_path, tmp_path / 'liar.aiida', {'db.sqlite3': content})
    declare_size(path, 'db.sqlite3', 4096)
    assert_refused(populated, path, CorruptStorage, 'more than the 4096 bytes its header declares')


CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from sqlitedos import SqliteDosStorage
    from sqlitedos.archive import import_archive
    profile = SqliteDosStorage.create_profile('h', filepath=sys.argv[1], default_user_email='h@x.org')
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as storage:
        try:
            import_archive(storage, sys.argv[2])
            error = None
        except Exception as exc:
            error = [type(exc).__name__, str(exc)]
    print(json.dumps({'error': error, 'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


@pytest.fixture
def small_tmp(tmp_path: Path) -> Iterator[Path]:
    """A 100 MB tmpfs for the child's ``TMPDIR``, unmounted afterwards."""
    with small_tmpfs(tmp_path / 'tmp', '100m') as mount:
        yield mount


@pytest.mark.parametrize('declared', ['honest', 'lying'])
def test_one_megabyte_bomb_costs_little_memory_and_disk(
    fixture_archive_path: Path, tmp_path: Path, small_tmp: Path, declared: str
) -> None:
    """About 1 MB of archive that inflates to 1 GiB: refused in under 300 MB of memory and 100 MB of temp disk."""
    database = database_of(fixture_archive_path)
    path = write_archive(fixture_archive_path, tmp_path / 'bomb.aiida', {'db.sqlite3': zeros(1024 * MIB, database)})
    assert path.stat().st_size < 1.5 * MIB
    if declared == 'lying':
        declare_size(path, 'db.sqlite3', 4096)
    env = {**os.environ, 'TMPDIR': str(small_tmp)}
    done = subprocess.run(
        [sys.executable, '-c', CHILD, str(tmp_path / 'target'), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['error'] is not None and result['error'][0] == 'CorruptStorage', result
    assert 'zip bomb' in result['error'][1] or 'its header declares' in result['error'][1], result
    assert result['maxrss_kib'] < 300 * 1024, result
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


# --- values in the archive's rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('column', 'value'),
    [
        ('attributes', '{"a": ' * (JSON_MAX_DEPTH + 1) + '1' + '}' * (JSON_MAX_DEPTH + 1)),
        ('extras', '[' * 100_000 + ']' * 100_000),
        ('attributes', '{"x": NaN}'),
        ('repository_metadata', '{"o": {'),
    ],
    ids=['attributes-too-deep', 'extras-far-too-deep', 'attributes-nan', 'repository-metadata-invalid'],
)
def test_archive_rows_with_bad_json_are_refused(
    populated: Any, fixture_archive_path: Path, tmp_path: Path, column: str, value: str
) -> None:
    sql = f"UPDATE db_dbnode SET {column} = '{value}' WHERE id = (SELECT max(id) FROM db_dbnode);"
    path = with_database(fixture_archive_path, tmp_path / 'bad-json.aiida', tmp_path, sql)
    assert_refused(populated, path, ImportValidationError, f'{column} that is not valid JSON or nests deeper')


def test_deep_but_allowed_values_import_and_can_be_filtered(
    populated: Any, fixture_archive_path: Path, tmp_path: Path
) -> None:
    deep = '{"a": ' * JSON_MAX_DEPTH + '1' + '}' * JSON_MAX_DEPTH
    sql = f"UPDATE db_dbnode SET extras = '{deep}' WHERE id = (SELECT max(id) FROM db_dbnode);"
    path = with_database(fixture_archive_path, tmp_path / 'deep-ok.aiida', tmp_path, sql)
    import_archive(populated, path)
    from sqlitedos import QueryBuilder

    rows = QueryBuilder(backend=populated).append(
        entity_type='', orm_base='node', filters={'extras.a': {'has_key': 'a'}}, project=['extras']
    )
    (extras,) = rows.one()
    assert extras['a']['a']['a'] is not None


# --- honest large members --------------------------------------------------------------------------------------------


def test_honest_large_members_still_stream(storage: Any, tmp_path: Path) -> None:
    """A 24 MB incompressible file and a 40 MB file of zeros (ratio ~1000, under the ratio-free size) round-trip."""
    user = storage.default_user if storage.default_user is not None else storage.users.create('u@x.org').store()
    node = storage.nodes.create(node_type='data.core.folder.FolderData.', user=user, label='large')
    noise = os.urandom(24 * MIB)
    node.repository.put_object_from_bytes(noise, 'noise.bin')
    node.repository.put_object_from_bytes(bytes(40 * MIB), 'zeros.bin')
    node.store()
    path = create_archive(storage, tmp_path / 'large.aiida')
    profile = SqliteDosStorage.create_profile('l', filepath=tmp_path / 'target', default_user_email='l@x.org')
    SqliteDosStorage.initialise(profile)
    with SqliteDosStorage(profile) as target:
        import_archive(target, path)
        copy = target.nodes.get(uuid=node.uuid)
        assert copy.repository.get_object_content('noise.bin', 'rb') == noise
        assert copy.repository.get_object_content('zeros.bin', 'rb') == bytes(40 * MIB)
