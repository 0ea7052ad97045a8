"""The exception hierarchy of sqlitedos, named after aiida-core's (``aiida.common.exceptions``).

Code written against aiida can catch these by the same names. Where aiida gives a class two bases (for example
``NotExistentKeyError(KeyError, NotExistent)``), so do we, so that ``except KeyError`` keeps working too.
"""

from __future__ import annotations

__all__ = (
    'AiidaException',
    'ArchiveImportError',
    'ClosedStorage',
    'ConfigurationError',
    'CorruptStorage',
    'DbContentError',
    'ExportValidationError',
    'ImportUniquenessError',
    'ImportValidationError',
    'IncompatibleExternalDependencies',
    'IncompatibleStorageSchema',
    'InputValidationError',
    'IntegrityError',
    'InvalidOperation',
    'LockedProfileError',
    'ModificationNotAllowed',
    'MultipleObjectsError',
    'NotExistent',
    'NotExistentAttributeError',
    'NotExistentKeyError',
    'ReadOnlyError',
    'StorageBackupError',
    'StorageBusyError',
    'StorageFullError',
    'StorageIOError',
    'StorageMigrationError',
    'StoragePermissionError',
    'StoringNotAllowed',
    'UniquenessError',
    'UnreachableStorage',
    'ValidationError',
)


class AiidaException(Exception):
    """Root of every exception that sqlitedos raises on purpose."""


class NotExistent(AiidaException):
    """The requested entity, key or object does not exist."""


class NotExistentAttributeError(AttributeError, NotExistent):
    """An attribute that does not exist was requested."""


class NotExistentKeyError(KeyError, NotExistent):
    """A key that does not exist was requested."""


class MultipleObjectsError(AiidaException):
    """One result was expected, several were found."""


class ValidationError(AiidaException):
    """A value or entity failed validation."""


class InputValidationError(ValidationError):
    """The input given to a call (a query dict, a filter value, a path...) is not valid."""


class IntegrityError(AiidaException):
    """A write would break an integrity rule of the storage (uniqueness, foreign key, link rules, key sets)."""


class UniquenessError(AiidaException):
    """A value that must be unique is already taken."""


class ModificationNotAllowed(AiidaException):
    """The entity cannot be changed in this state (for example the attributes of a stored node)."""


class StoringNotAllowed(AiidaException):
    """The entity cannot be stored."""


class InvalidOperation(AiidaException):
    """The operation is not valid for this object or storage."""


class DbContentError(AiidaException):
    """The content of the database is inconsistent."""


class ConfigurationError(AiidaException):
    """A profile or storage configuration is missing or wrong."""


class IncompatibleExternalDependencies(AiidaException):
    """An external dependency (for example the SQLite library) is too old."""


class IncompatibleStorageSchema(ConfigurationError):
    """The storage has a schema version this code cannot use as it is (migrate it, or use a newer sqlitedos)."""


class CorruptStorage(ConfigurationError):
    """The storage is damaged: unreadable database, missing repository identity, or database and repository
    that do not belong together."""


class UnreachableStorage(ConfigurationError):
    """The storage cannot be reached: missing folder, database or container."""


class StorageMigrationError(AiidaException):
    """A storage migration failed or cannot be performed."""


class StorageBackupError(AiidaException):
    """A backup could not be made."""


class StorageIOError(AiidaException):
    """The operating system failed to read or write the storage (an I/O error): a condition of the disk or the
    system, not damage found in the data. Retry once the cause is fixed; do not restore a backup over the storage
    unless ``sqlitedos verify`` reports damage."""


class StorageFullError(StorageIOError):
    """The disk (or quota) holding the storage is full: free some space and retry; committed data is intact."""


class StoragePermissionError(StorageIOError):
    """The operating system refused access to a file of the storage (EACCES/EPERM): check its owner and mode."""


class ClosedStorage(AiidaException):
    """The storage was closed; open a new storage object."""


class ReadOnlyError(AiidaException):
    """The storage is read-only (an archive, or a folder without write permission)."""


class LockedProfileError(AiidaException):
    """The profile is in use by another process and the operation needs exclusive access."""


class StorageBusyError(LockedProfileError):
    """The database stayed locked by another process for longer than the busy timeout: retry when it is done."""


class ExportValidationError(AiidaException):
    """The entities to export do not form a valid archive."""


class ArchiveImportError(AiidaException):
    """An archive could not be imported."""


class ImportValidationError(ArchiveImportError):
    """The content of an archive breaks a rule of the storage it is imported into."""


class ImportUniquenessError(ArchiveImportError):
    """An archive entity clashes with a unique value in the target storage."""
