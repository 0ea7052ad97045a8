"""Users: identified by their email."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlitedos.entities.base import BackendCollection, BackendEntity

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

    @property
    def email(self) -> str:
        return self._row['email']

    @email.setter
    def email(self, value: str) -> None:
        self._set_field('email', value)

    @property
    def first_name(self) -> str:
        return self._row['first_name']

    @first_name.setter
    def first_name(self, value: str) -> None:
        self._set_field('first_name', value)

    @property
    def last_name(self) -> str:
        return self._row['last_name']

    @last_name.setter
    def last_name(self, value: str) -> None:
        self._set_field('last_name', value)

    @property
    def institution(self) -> str:
        return self._row['institution']

    @institution.setter
    def institution(self, value: str) -> None:
        self._set_field('institution', value)


class BackendUserCollection(BackendCollection[BackendUser]):
    """The users of a storage."""

    ENTITY_CLASS = BackendUser

    def create(self, email: str, first_name: str = '', last_name: str = '', institution: str = '', **kwargs: Any) -> BackendUser:  # noqa: E501
        """A new, unstored user."""
        return BackendUser(self._backend, email, first_name, last_name, institution, **kwargs)
