"""Authorisation infos: one per (user, computer), with transport parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlitedos.entities.base import BackendCollection, BackendEntity, clean_value

if TYPE_CHECKING:
    from sqlitedos.entities.computers import BackendComputer
    from sqlitedos.entities.users import BackendUser
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendAuthInfo', 'BackendAuthInfoCollection')


class BackendAuthInfo(BackendEntity):
    """A row of ``db_dbauthinfo``."""

    TABLE_NAME = 'db_dbauthinfo'
    ORM_BASE = 'authinfo'

    def __init__(
        self,
        backend: StorageBackend,
        computer: BackendComputer,
        user: BackendUser,
        enabled: bool = True,
        auth_params: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(backend, {})
        self._row.update(
            aiidauser_id=self._require_stored(user, 'the user'),
            dbcomputer_id=self._require_stored(computer, 'the computer'),
            metadata=clean_value(metadata or {}),
            auth_params=clean_value(auth_params or {}),
            enabled=bool(enabled),
        )

    @property
    def enabled(self) -> bool:
        return self._row['enabled']

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._set_field('enabled', bool(value))

    @property
    def computer(self) -> BackendComputer:
        return self._backend.computers.get(self._row['dbcomputer_id'])

    @property
    def user(self) -> BackendUser:
        return self._backend.users.get(self._row['aiidauser_id'])

    def get_auth_params(self) -> dict[str, Any]:
        return self._row['auth_params']

    def set_auth_params(self, auth_params: dict[str, Any]) -> None:
        self._set_field('auth_params', clean_value(auth_params))

    def get_metadata(self) -> dict[str, Any]:
        return self._row['metadata']

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._set_field('metadata', clean_value(metadata))


class BackendAuthInfoCollection(BackendCollection[BackendAuthInfo]):
    """The authorisation infos of a storage."""

    ENTITY_CLASS = BackendAuthInfo
