"""Computers: a label, a hostname, scheduler and transport plugins, and metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlitedos.db import translate_errors
from sqlitedos.entities.base import BackendCollection, BackendEntity, clean_value, column, new_row_uuid
from sqlitedos.exceptions import IntegrityError, InvalidOperation

if TYPE_CHECKING:
    from sqlitedos.storage.base import StorageBackend

__all__ = ('BackendComputer', 'BackendComputerCollection')

SELECT_LABELS = 'SELECT label FROM db_dbcomputer ORDER BY id'


class BackendComputer(BackendEntity):
    """A row of ``db_dbcomputer``."""

    TABLE_NAME = 'db_dbcomputer'
    ORM_BASE = 'computer'

    def __init__(
        self,
        backend: StorageBackend,
        label: str,
        hostname: str = '',
        description: str = '',
        scheduler_type: str = '',
        transport_type: str = '',
        metadata: dict[str, Any] | None = None,
        uuid: str | None = None,
    ) -> None:
        super().__init__(
            backend,
            {
                'uuid': uuid or new_row_uuid(),
                'label': label,
                'hostname': hostname,
                'description': description,
                'scheduler_type': scheduler_type,
                'transport_type': transport_type,
                'metadata': clean_value(metadata or {}),
            },
        )

    uuid = column('uuid')
    label = column('label')

    def set_label(self, value: str) -> None:
        self._set_field('label', value)

    description = column('description')

    def set_description(self, value: str) -> None:
        self._set_field('description', value)

    hostname = column('hostname')

    def set_hostname(self, value: str) -> None:
        self._set_field('hostname', value)

    def get_metadata(self) -> dict[str, Any]:
        return self._row['metadata']

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        self._set_field('metadata', clean_value(metadata))

    def get_scheduler_type(self) -> str:
        return self._row['scheduler_type']

    def set_scheduler_type(self, value: str) -> None:
        self._set_field('scheduler_type', value)

    def get_transport_type(self) -> str:
        return self._row['transport_type']

    def set_transport_type(self, value: str) -> None:
        self._set_field('transport_type', value)

    def copy(self) -> BackendComputer:
        """An unstored copy with a new uuid (aiida allows copying stored computers only)."""
        if not self.is_stored:
            raise InvalidOperation('You can copy a computer only after having stored it')
        row = {key: value for key, value in self._row.items() if key != 'uuid'}
        return BackendComputer(self._backend, **row)


class BackendComputerCollection(BackendCollection[BackendComputer]):
    """The computers of a storage."""

    ENTITY_CLASS = BackendComputer

    def list_names(self) -> list[str]:
        """The labels of all computers."""
        with translate_errors():
            return [label for (label,) in self._backend.get_session().execute(SELECT_LABELS)]

    def delete(self, pk: int) -> None:
        """Delete a computer; ``InvalidOperation`` if nodes still use it."""
        try:
            super().delete(pk)
        except IntegrityError as exc:
            raise InvalidOperation(f'Unable to delete the requested computer {pk}: nodes still use it ({exc})') from exc
