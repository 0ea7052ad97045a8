"""Users: identified by their email."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlitedos.entities.base import BackendCollection, BackendEntity, column

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendUser', 'BackendUserCollection')


class BackendUser(BackendEntity):
    """A row of ``db_dbuser``."""

    TABLE_NAME = 'db_dbuser'
    ORM_BASE = 'user'

    def __init__(
        self, backend: StorageBackend, email: str, first_name: str = '', last_name: str = '', institution: str = ''
    ) -> None:
        if not isinstance(email, str) or not email:
            raise TypeError(f'a user needs a non-empty email string, got {email!r}')
        super().__init__(
            backend, {'email': email, 'first_name': first_name, 'last_name': last_name, 'institution': institution}
        )

    email = column('email', writable=True)
    first_name = column('first_name', writable=True)
    last_name = column('last_name', writable=True)
    institution = column('institution', writable=True)


class BackendUserCollection(BackendCollection[BackendUser]):
    """The users of a storage."""

    ENTITY_CLASS = BackendUser

    def create(
        self, email: str, first_name: str = '', last_name: str = '', institution: str = '', **kwargs: Any
    ) -> BackendUser:
        """A new, unstored user."""
        return BackendUser(self._backend, email, first_name, last_name, institution, **kwargs)
