"""aiida's ``AbstractRepositoryBackend`` over sqlitedos' repository backends (container and sandbox)."""

from __future__ import annotations

from aiida.repository.backend.abstract import AbstractRepositoryBackend

from sqlitedos.aiida.errors import translating_methods
from sqlitedos.repository.disk_objectstore import DiskObjectStoreRepositoryBackend
from sqlitedos.repository.sandbox import SandboxShaRepositoryBackend

__all__ = ('SqlitedosContainerRepository', 'SqlitedosSandboxRepository')


@translating_methods
class SqlitedosContainerRepository(DiskObjectStoreRepositoryBackend, AbstractRepositoryBackend):
    """The disk-objectstore container of a folder storage, as aiida's repository backend."""


@translating_methods
class SqlitedosSandboxRepository(SandboxShaRepositoryBackend, AbstractRepositoryBackend):
    """The sandbox repository of the in-memory storage, as aiida's repository backend."""
