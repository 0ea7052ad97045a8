"""A node's file tree (``NodeRepository``): paths, serialisation in aiida's format, immutability once stored."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from sqlitedos.exceptions import InputValidationError, ModificationNotAllowed, NotExistent
from sqlitedos.repository.abstract import NotAByteStreamError
from sqlitedos.repository.tree import File, FileType, NodeRepository, flatten, iter_keys, validate_path


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class FakeNode:
    """The smallest object honouring the contract ``NodeRepository`` has with backend nodes."""

    def __init__(self, storage: Any, repository_metadata: dict[str, Any] | None = None) -> None:
        self.backend = storage
        self.is_stored = False
        self._metadata = repository_metadata or {}

    @property
    def repository_metadata(self) -> dict[str, Any]:
        return self._metadata

    @repository_metadata.setter
    def repository_metadata(self, value: dict[str, Any]) -> None:
        if self.is_stored:
            raise ModificationNotAllowed('stored')
        self._metadata = value


@pytest.fixture
def node(storage: Any) -> FakeNode:
    return FakeNode(storage)


@pytest.fixture
def tree(node: FakeNode) -> NodeRepository:
    return NodeRepository(node)


def test_empty_tree_serialises_to_empty_dict(tree: NodeRepository, node: FakeNode) -> None:
    assert tree.serialize() == {}
    assert tree.list_objects() == [] and list(tree.glob()) == []


def test_put_and_serialise_in_aiidas_format(tree: NodeRepository, node: FakeNode, storage: Any) -> None:
    tree.put_object_from_filelike(io.BytesIO(b'a'), 'a.txt')
    tree.put_object_from_filelike(io.BytesIO(b'b'), 'sub/dir/b.txt')
    tree.create_directory('emptydir')
    expected = {
        'o': {
            'a.txt': {'k': sha256(b'a')},
            'sub': {'o': {'dir': {'o': {'b.txt': {'k': sha256(b'b')}}}}},
            'emptydir': {},
        }
    }
    assert node.repository_metadata == expected
    assert json.loads(json.dumps(node.repository_metadata)) == expected
    tree.put_pending()  # what store() does right before its commit
    assert storage.get_repository().has_objects([sha256(b'a'), sha256(b'b')]) == [True, True]
    assert flatten(expected) == {
        'a.txt': sha256(b'a'),
        'sub/': None,
        'sub/dir/': None,
        'sub/dir/b.txt': sha256(b'b'),
        'emptydir/': None,
    }
    assert sorted(iter_keys(expected)) == sorted([sha256(b'a'), sha256(b'b')])


def test_read_back(tree: NodeRepository) -> None:
    tree.put_object_from_bytes('héllo\r\nworld'.encode(), 'dir/text.txt')
    assert tree.get_object_content('dir/text.txt') == 'héllo\r\nworld'
    assert tree.get_object_content('dir/text.txt', mode='rb') == 'héllo\r\nworld'.encode()
    with tree.open('dir/text.txt') as handle:
        assert handle.read() == 'héllo\r\nworld'.encode()
    with tree.open('dir/text.txt', 'r') as handle:
        assert handle.read() == 'héllo\r\nworld'
    with pytest.raises(InputValidationError, match='mode'):
        tree.open('dir/text.txt', 'w')


def test_listing_and_walk(tree: NodeRepository) -> None:
    for path in ('b.txt', 'a/x.txt', 'a/y/z.txt', 'c/w.txt'):
        tree.put_object_from_bytes(path.encode(), path)
    assert tree.list_object_names() == ['a', 'b.txt', 'c']
    assert tree.list_object_names('a') == ['x.txt', 'y']
    assert [entry.file_type for entry in tree.list_objects('a')] == [FileType.FILE, FileType.DIRECTORY]
    assert tree.get_object('a/x.txt').key == sha256(b'a/x.txt')
    assert tree.get_object('a').file_type is FileType.DIRECTORY
    assert list(tree.walk()) == [
        (PurePosixPath('.'), ['a', 'c'], ['b.txt']),
        (PurePosixPath('a'), ['y'], ['x.txt']),
        (PurePosixPath('a/y'), [], ['z.txt']),
        (PurePosixPath('c'), [], ['w.txt']),
    ]
    assert sorted(map(str, tree.glob())) == ['a/x.txt', 'a/y/z.txt', 'b.txt', 'c/w.txt']
    with pytest.raises(FileNotFoundError):
        tree.get_object('nope')
    with pytest.raises(NotADirectoryError):
        tree.list_objects('b.txt')
    with pytest.raises(IsADirectoryError):
        tree.get_object_content('a')


def test_tree_from_folder_and_copy_back(tree: NodeRepository, tmp_path: Path) -> None:
    source = tmp_path / 'source'
    (source / 'sub' / 'deeper').mkdir(parents=True)
    (source / 'empty').mkdir()
    (source / 'top.txt').write_text('top')
    (source / 'sub' / 'deeper' / 'data.bin').write_bytes(bytes(range(256)))
    tree.put_object_from_tree(source, 'imported')
    assert tree.list_object_names('imported') == ['empty', 'sub', 'top.txt']
    target = tmp_path / 'target'
    tree.copy_tree(target)
    assert (target / 'imported' / 'top.txt').read_text() == 'top'
    assert (target / 'imported' / 'sub' / 'deeper' / 'data.bin').read_bytes() == bytes(range(256))
    assert (target / 'imported' / 'empty').is_dir()
    tree.copy_tree(tmp_path / 'part', 'imported/sub')
    assert (tmp_path / 'part' / 'deeper' / 'data.bin').is_file()
    with pytest.raises(InputValidationError, match='absolute'):
        tree.put_object_from_tree('relative/folder')


def test_put_object_from_file(tree: NodeRepository, tmp_path: Path) -> None:
    path = tmp_path / 'f.dat'
    path.write_bytes(b'data')
    tree.put_object_from_file(path, 'copy.dat')
    assert tree.get_object_content('copy.dat', 'rb') == b'data'


def test_replace_and_delete(tree: NodeRepository, node: FakeNode) -> None:
    tree.put_object_from_bytes(b'one', 'f')
    tree.put_object_from_bytes(b'two', 'f')
    assert node.repository_metadata == {'o': {'f': {'k': sha256(b'two')}}}
    tree.put_object_from_bytes(b'x', 'd/x')
    with pytest.raises(OSError, match='not empty'):
        tree.delete_object('d')
    tree.delete_object('d/x')
    tree.delete_object('d')
    assert node.repository_metadata == {'o': {'f': {'k': sha256(b'two')}}}
    tree.erase()
    assert node.repository_metadata == {}


@pytest.mark.parametrize(
    'path',
    ['/etc/passwd', '../outside', 'a/../../b', 'a//b', '', 'a/./..'],
    ids=['absolute', 'parent', 'nested-parent', 'empty-part', 'root', 'dot-parent'],
)
def test_bad_file_paths(tree: NodeRepository, path: str) -> None:
    with pytest.raises(InputValidationError):
        tree.put_object_from_bytes(b'x', path)
    assert tree.serialize() == {}


def test_validate_path() -> None:
    assert validate_path(None) == PurePosixPath() == validate_path('.') == validate_path('')
    assert validate_path('a/b/') == PurePosixPath('a/b') == validate_path(PurePosixPath('a/b'))
    assert validate_path('./a') == PurePosixPath('a')
    with pytest.raises(InputValidationError):
        validate_path(3)  # type: ignore[arg-type]


def test_file_over_directory_and_directory_over_file(tree: NodeRepository) -> None:
    tree.put_object_from_bytes(b'x', 'a/b')
    with pytest.raises(IsADirectoryError):
        tree.put_object_from_bytes(b'x', 'a')
    with pytest.raises(NotADirectoryError):
        tree.put_object_from_bytes(b'x', 'a/b/c')


def test_non_binary_handle(tree: NodeRepository, tmp_path: Path) -> None:
    with pytest.raises(NotAByteStreamError, match='binary'):
        tree.put_object_from_filelike(io.StringIO('text'), 'a.txt')  # type: ignore[arg-type]
    (tmp_path / 't.txt').write_text('text')
    with open(tmp_path / 't.txt') as handle, pytest.raises(NotAByteStreamError):
        tree.put_object_from_filelike(handle, 'a.txt')  # type: ignore[arg-type]


def test_stored_node_files_are_immutable(tree: NodeRepository, node: FakeNode, tmp_path: Path) -> None:
    tree.put_object_from_bytes(b'x', 'a')
    node.is_stored = True
    (tmp_path / 'src').mkdir()
    attempts = [
        lambda: tree.put_object_from_bytes(b'y', 'b'),
        lambda: tree.put_object_from_filelike(io.BytesIO(b'y'), 'b'),
        lambda: tree.put_object_from_file(tmp_path / 'nope', 'b'),
        lambda: tree.put_object_from_tree(tmp_path / 'src'),
        lambda: tree.create_directory('d'),
        lambda: tree.delete_object('a'),
        lambda: tree.erase(),
    ]
    for attempt in attempts:
        with pytest.raises(ModificationNotAllowed, match='stored node'):
            attempt()
    assert tree.get_object_content('a') == 'x'


def test_tree_loads_from_metadata(storage: Any) -> None:
    key = storage.get_repository().put_object_from_filelike(io.BytesIO(b'content'))
    node = FakeNode(storage, {'o': {'d': {'o': {'f.txt': {'k': key}}}}})
    tree = NodeRepository(node)
    assert tree.get_object_content('d/f.txt') == 'content'
    assert tree.get_file_keys() == [key]
    assert tree.hash() == NodeRepository(FakeNode(storage, tree.serialize())).hash()


def test_missing_object_behind_a_key(storage: Any) -> None:
    tree = NodeRepository(FakeNode(storage, {'o': {'f': {'k': sha256(b'never stored')}}}))
    with pytest.raises(NotExistent):
        tree.get_object_content('f')


def test_invalid_metadata() -> None:
    with pytest.raises(InputValidationError):
        File.from_serialized({'k': 'a', 'o': {}})
    with pytest.raises(InputValidationError):
        File.from_serialized({'o': []})


def test_dedup_across_nodes(storage: Any) -> None:
    for index in range(25):
        tree = NodeRepository(FakeNode(storage))
        tree.put_object_from_bytes(b'shared content', f'file-{index}.txt')
        tree.put_object_from_bytes(b'shared content', 'again/same.txt')
        tree.put_pending()
    assert list(storage.get_repository().list_objects()) == [sha256(b'shared content')]


# --- on real nodes -------------------------------------------------------------------------------------------------


def new_node(storage: Any) -> Any:
    return storage.nodes.create(node_type='data.core.folder.FolderData.', user=storage.default_user)


def test_real_node_files_round_trip(storage: Any) -> None:
    node = new_node(storage)
    node.repository.put_object_from_bytes(b'alpha', 'a.txt')
    node.repository.put_object_from_bytes(b'beta', 'sub/b.txt')
    node.store()
    assert node.repository_metadata == {
        'o': {'a.txt': {'k': sha256(b'alpha')}, 'sub': {'o': {'b.txt': {'k': sha256(b'beta')}}}}
    }
    with pytest.raises(ModificationNotAllowed):
        node.repository.put_object_from_bytes(b'gamma', 'c.txt')
    loaded = storage.nodes.get(pk=node.pk)
    assert loaded.repository.get_object_content('sub/b.txt') == 'beta'
    assert loaded.repository.list_object_names() == ['a.txt', 'sub']
    (row,) = (
        storage.get_session().execute('SELECT repository_metadata FROM db_dbnode WHERE id = ?', (node.pk,)).fetchall()
    )
    assert json.loads(row[0]) == node.repository_metadata


def test_metadata_tracks_a_random_sequence_of_changes(storage: Any) -> None:
    """After each put/delete the node's metadata equals a model of the files (the cached serialisation is right)."""
    rng = random.Random(4)
    node = FakeNode(storage)
    tree = NodeRepository(node)
    model: dict[str, bytes] = {}
    for step in range(300):
        if model and rng.random() < 0.3:
            path = rng.choice(sorted(model))
            tree.delete_object(path)
            del model[path]
        else:
            path = '/'.join(f'd{rng.randrange(3)}' for _ in range(rng.randrange(3))) + f'/f{rng.randrange(20)}'
            path = path.lstrip('/')
            content = f'{step}'.encode()
            tree.put_object_from_bytes(content, path)
            model[path] = content
        files = {path: key for path, key in flatten(node.repository_metadata).items() if key is not None}
        assert files == {path: sha256(content) for path, content in model.items()}, step
    assert NodeRepository(FakeNode(storage, json.loads(json.dumps(node.repository_metadata)))).serialize() == (
        node.repository_metadata
    )


def test_referenced_keys_sql_finds_the_keys_iter_keys_finds() -> None:
    """The SQL walk and the Python walk agree, also on a file and a folder *named* ``k`` and on nodes without files."""
    from sqlitedos.db import connect, encode_json
    from sqlitedos.repository.tree import SELECT_REFERENCED_KEYS

    trees = [
        {'o': {'k': {'k': 'a' * 64}, 'd': {'o': {'k': {'o': {'x': {'k': 'b' * 64}}}}}}},
        {'o': {'f': {'k': 'a' * 64}, 'g': {'k': 'c' * 64}}},
        {},
        None,
    ]
    connection = connect(':memory:')
    try:
        connection.execute('CREATE TABLE db_dbnode (id INTEGER PRIMARY KEY, repository_metadata TEXT)')
        connection.executemany(
            'INSERT INTO db_dbnode (repository_metadata) VALUES (?)',
            [(None if tree is None else encode_json(tree),) for tree in trees],
        )
        rows = connection.execute(SELECT_REFERENCED_KEYS).fetchall()
    finally:
        connection.close()
    assert sorted(key for (key,) in rows) == sorted({key for tree in trees for key in iter_keys(tree)})
    assert len(rows) == 3
