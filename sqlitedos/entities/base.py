"""What every backend entity and collection shares: row codecs, store, update, get, delete.

An entity keeps its row as a dict of decoded Python values (``_row``, column name -> value) plus its ``id`` (None
until stored). Each class compiles its INSERT/UPDATE/SELECT statements once, from ``tables.py``, when it is defined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from sqlitedos.db import (
    JSON_MAX_DEPTH,
    decode_datetime,
    decode_json,
    encode_datetime,
    encode_json,
    new_uuid,
    now,
    translate_errors,
)
from sqlitedos.exceptions import InvalidOperation, NotExistent, NotExistentAttributeError, ValidationError
from sqlitedos.tables import TABLES, Table, quote_identifier

if TYPE_CHECKING:
    from typing_extensions import Self  # type hints only: the package needs nothing beyond the stdlib at run time

    from sqlitedos.storage.base import StorageBackend

__all__ = (
    'BackendCollection',
    'BackendEntity',
    'ExtrasMixin',
    'JsonDictMixin',
    'clean_value',
    'column',
    'require_stored',
    'user_column',
    'validate_attribute_extra_key',
)

#: aiida's ``AIIDA_FLOAT_PRECISION``: floats are stored rounded to this many significant digits.
FLOAT_PRECISION = 14
#: aiida's ``FIELD_SEPARATOR``: reserved for nested attribute paths, so not allowed in a key.
FIELD_SEPARATOR = '.'


def validate_attribute_extra_key(key: Any) -> None:
    """Raise ``ValidationError`` unless ``key`` is a non-empty string without ``.``."""
    if not key or not isinstance(key, str):
        raise ValidationError(f'key for attributes or extras should be a non-empty string, got {key!r}')
    if FIELD_SEPARATOR in key:
        raise ValidationError(f'key for attributes or extras cannot contain the character `.`: {key!r}')


def _clean_scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return _clean_real(value)
    # Other numbers (numpy's, Decimal, Fraction, int subclasses): imported here, so opening a storage imports
    # neither module (``decimal`` is ~1 ms of a cold start).
    import numbers
    from decimal import Decimal

    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, (numbers.Real, Decimal)):
        return _clean_real(value)
    raise ValidationError(f'type `{type(value).__name__}` is not supported as it is not json-serializable: {value!r}')


def _clean_real(value: Any) -> int | float:
    """A real number rounded to ``FLOAT_PRECISION`` digits as aiida does; NaN and infinities refused."""
    # Decimal is not a numbers.Real, and Decimal('sNaN') cannot even be converted to float: ask it directly.
    is_finite = getattr(value, 'is_finite', None) if not isinstance(value, float) else None
    if not (is_finite() if is_finite is not None else math.isfinite(value)):
        raise ValidationError(f'nan and inf/-inf can not be serialized to the database: {value!r}')
    text = f'{value:.{FLOAT_PRECISION}g}'
    cleaned = float(text)
    if 'e' in text and cleaned.is_integer():
        return int(cleaned)
    return cleaned


def clean_value(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` cleaned as aiida cleans attributes and extras; ``ValidationError`` for what JSON cannot hold.

    Mappings stay mappings, other iterables (not strings) become lists, integers become ``int``, floats are rounded
    to 14 significant digits (and become ``int`` when that rounding is integral in exponent form). NaN and infinities
    are refused, and so is nesting deeper than ``db.JSON_MAX_DEPTH``.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (Mapping, Iterable)):
        if _depth >= JSON_MAX_DEPTH:
            raise ValidationError(
                f'the value nests lists/dictionaries deeper than {JSON_MAX_DEPTH} levels, which cannot be stored and '
                'read back: flatten it, or store it as a file'
            )
        if isinstance(value, Mapping):
            return {key: clean_value(item, _depth + 1) for key, item in value.items()}
        return [clean_value(item, _depth + 1) for item in value]
    return _clean_scalar(value)


def encode_json_checked(value: Any) -> str:
    """``encode_json`` raising ``ValidationError`` (naming the value) for what JSON cannot hold."""
    try:
        return encode_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(f'the value cannot be stored as JSON ({exc!r}): {str(value)[:200]}') from exc


def _encode_datetime(value: Any) -> str:
    if isinstance(value, str):
        return encode_datetime(decode_datetime(value))  # type: ignore[arg-type]
    return encode_datetime(value)


def _encode_bool(value: Any) -> int:
    return int(bool(value))


def _identity(value: Any) -> Any:
    return value


ENCODERS: dict[str, Callable[[Any], Any]] = {
    'json': encode_json_checked,
    'datetime': _encode_datetime,
    'bool': _encode_bool,
}
DECODERS: dict[str, Callable[[Any], Any]] = {
    'json': decode_json,
    'datetime': decode_datetime,
    'bool': bool,
}


def column_encoders(table: Table, names: Iterable[str]) -> tuple[Callable[[Any], Any], ...]:
    """The encoder (Python value -> SQL value) of each named column, in order."""
    return tuple(ENCODERS.get(table.column(name).kind, _identity) for name in names)


def column_decoders(table: Table) -> dict[str, Callable[[Any], Any]]:
    """The decoders (SQL value -> Python value) of the columns that need one."""
    return {column.name: DECODERS[column.kind] for column in table.columns if column.kind in DECODERS}


def select_sql(table: Table) -> str:
    """``SELECT <all columns> FROM <table>`` (no WHERE)."""
    columns = ', '.join(quote_identifier(name) for name in table.column_names)
    return f'SELECT {columns} FROM {quote_identifier(table.name)}'


def insert_sql(table: Table, names: Iterable[str]) -> str:
    """``INSERT INTO <table> (<names>) VALUES (?, ...)``."""
    names = tuple(names)
    columns = ', '.join(quote_identifier(name) for name in names)
    return f'INSERT INTO {quote_identifier(table.name)} ({columns}) VALUES ({", ".join("?" * len(names))})'


def update_sql(table: Table, names: Iterable[str]) -> str:
    """``UPDATE <table> SET <name> = ?, ... WHERE id = ?``."""
    assignments = ', '.join(f'{quote_identifier(name)} = ?' for name in names)
    return f'UPDATE {quote_identifier(table.name)} SET {assignments} WHERE id = ?'


E = TypeVar('E', bound='BackendEntity')


def column(name: str, writable: bool = False, doc: str | None = None) -> Any:
    """A property reading column ``name`` of the entity's row; ``writable`` adds a setter that writes it."""

    def get(self: BackendEntity) -> Any:
        return self._row[name]

    def set_(self: BackendEntity, value: Any) -> None:
        self._set_field(name, value)

    return property(get, set_ if writable else None, doc=doc or f'The ``{name}`` column.')


def user_column(name: str = 'user_id') -> Any:
    """A property for the owning user (stored in column ``name``), with a setter taking a stored user."""

    def get(self: BackendEntity) -> Any:
        return self._backend.users.get(self._row[name])

    def set_(self: BackendEntity, user: Any) -> None:
        self._set_field(name, self._require_stored(user, 'the user'))

    return property(get, set_, doc='The user this entity belongs to.')


class BackendEntity:
    """A row of one table: stored (``id`` set) or not yet.

    Subclasses set ``TABLE_NAME`` and ``ORM_BASE``; ``MTIME_COLUMN`` names the column refreshed on every update.
    """

    TABLE_NAME: ClassVar[str]
    ORM_BASE: ClassVar[str]
    MTIME_COLUMN: ClassVar[str | None] = None
    TABLE: ClassVar[Table]
    FIELDS: ClassVar[tuple[str, ...]]
    _ENCODERS: ClassVar[tuple[Callable[[Any], Any], ...]]
    _DECODERS: ClassVar[dict[str, Callable[[Any], Any]]]
    _INSERT: ClassVar[str]
    _SELECT_BY_ID: ClassVar[str]
    _UPDATE: ClassVar[dict[str, str]]
    #: the decoded row once decoded (see ``_row``), and the raw database row until then
    _decoded: dict[str, Any] | None
    _raw: Mapping[str, Any] | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if 'TABLE_NAME' not in cls.__dict__:
            return
        table = TABLES[cls.TABLE_NAME]
        cls.TABLE = table
        cls.FIELDS = tuple(name for name in table.column_names if name != 'id')
        cls._ENCODERS = column_encoders(table, cls.FIELDS)
        cls._DECODERS = column_decoders(table)
        cls._INSERT = insert_sql(table, cls.FIELDS) + ' RETURNING id'
        cls._SELECT_BY_ID = select_sql(table) + ' WHERE id = ?'
        bump = (cls.MTIME_COLUMN,) if cls.MTIME_COLUMN else ()
        cls._UPDATE = {name: update_sql(table, (name, *bump)) for name in cls.FIELDS if name != cls.MTIME_COLUMN}

    def __init__(self, backend: StorageBackend, row: dict[str, Any]) -> None:
        self._backend = backend
        self._id: int | None = None
        self._row = row

    @classmethod
    def from_row(cls, backend: StorageBackend, row: Mapping[str, Any]) -> Self:
        """A stored entity built from a raw database row (column name -> SQL value).

        The row is decoded (JSON, datetimes) on the first access to any field, so a query projecting ``*`` over many
        rows costs little more than the rows themselves until their values are read.
        """
        entity = cls.__new__(cls)
        entity._backend = backend
        entity._id = row['id']
        entity._decoded = None
        entity._raw = row
        return entity

    @property
    def _row(self) -> dict[str, Any]:
        """The decoded row (column name -> Python value), decoded from the raw row on first use."""
        row = self._decoded
        if row is None:
            raw, decoders = self._raw, self._DECODERS
            assert raw is not None  # from_row set it, and it is dropped only once the decoded row is set
            row = self._decoded = {
                name: (decoders[name](raw[name]) if name in decoders else raw[name])
                for name in self.FIELDS
                if name in raw
            }
            self._raw = None
            self._after_load()
        return row

    @_row.setter
    def _row(self, row: dict[str, Any]) -> None:
        self._decoded = row
        self._raw = None

    def _after_load(self) -> None:
        """Hook run after ``from_row`` (normalising decoded values)."""

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: {"pk=" + str(self._id) if self._id is not None else "unstored"}>'

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        if self._id is None:
            return self is other
        return self._id == other._id and self._backend is other._backend

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._id)) if self._id is not None else id(self)

    @property
    def backend(self) -> StorageBackend:
        """The storage this entity belongs to."""
        return self._backend

    @property
    def id(self) -> int | None:
        """The primary key, None until stored."""
        return self._id

    @property
    def pk(self) -> int | None:
        """Alias of ``id``."""
        return self._id

    @property
    def is_stored(self) -> bool:
        return self._id is not None

    # --- storing and updating ---------------------------------------------------------------------------------

    def _fill_defaults(self) -> None:
        """Fill the values aiida fills in at INSERT time (timestamps)."""

    def _params(self) -> tuple[Any, ...]:
        row = self._row
        return tuple(encode(row[name]) for name, encode in zip(self.FIELDS, self._ENCODERS))

    def store(self) -> Self:
        """Insert the row (a no-op if already stored); returns the entity."""
        if self._id is not None:
            return self
        self._check_backend_open()
        self._fill_defaults()
        params = self._params()
        with self._backend.transaction() as connection, translate_errors():
            self._id = connection.execute(self._INSERT, params).fetchone()[0]
            self._backend._session().on_rollback(self)
        return self

    def _rolled_back(self) -> None:
        """Forget the pk of a store whose transaction was rolled back or failed to commit: the entity is unstored
        again, so a retry stores it."""
        self._id = None

    def _check_backend_open(self) -> None:
        self._backend._session()

    def _set_field(self, name: str, value: Any) -> None:
        """Set one column; written at once (with the modification time refreshed) if the entity is stored."""
        self._row[name] = value
        if self._id is not None:
            self._write_fields(name)

    def _write_fields(self, name: str) -> None:
        encoded = ENCODERS.get(self.TABLE.column(name).kind, _identity)(self._row[name])
        params: tuple[Any, ...] = (encoded,)
        if self.MTIME_COLUMN:
            self._row[self.MTIME_COLUMN] = stamp = now()
            params += (encode_datetime(stamp),)
        with self._backend.transaction() as connection, translate_errors():
            cursor = connection.execute(self._UPDATE[name], params + (self._id,))
        if cursor.rowcount == 0:
            raise NotExistent(f'{self!r} no longer exists in the storage: it was deleted')

    def _require_stored(self, other: BackendEntity, what: str) -> int:
        """The pk of ``other``, checking it is a stored entity of this storage."""
        return require_stored(self._backend, other, what)


def require_stored(backend: StorageBackend, other: Any, what: str) -> int:
    """The pk of ``other``, checking it is a stored backend entity of ``backend``."""
    if not isinstance(other, BackendEntity):
        raise TypeError(f'{what} must be a backend entity, got {type(other).__name__}: {other!r}')
    if other._backend is not backend:
        raise InvalidOperation(f'{what} {other!r} belongs to another storage ({other._backend}), not {backend}')
    if other._id is None:
        raise InvalidOperation(f'{what} {other!r} is not stored: store it first')
    return other._id


class JsonDictMixin:
    """Key/value operations on a JSON object column (``attributes``, ``extras``), shared by their public methods.

    On a stored entity values are cleaned (as aiida does) and the whole column is written at once; if that write
    fails the in-memory value stays as it was.
    """

    _row: dict[str, Any]
    _id: int | None
    _set_field: Callable[[str, Any], None]  # provided by BackendEntity

    def _dict_get(self, column: str, key: str) -> Any:
        try:
            return self._row[column][key]
        except KeyError:
            raise NotExistentAttributeError(f'{column[:-1]} `{key}` does not exist') from None

    def _dict_set_many(self, column: str, values: Mapping[str, Any], reset: bool = False) -> None:
        for key in values:
            validate_attribute_extra_key(key)
        if self._id is not None:
            values = {key: clean_value(value) for key, value in values.items()}
        self._dict_replace(column, dict(values) if reset else {**self._row[column], **values})

    def _dict_delete_many(self, column: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        missing = [key for key in keys if key not in self._row[column]]
        if missing:
            raise NotExistentAttributeError(f'{column} `{", ".join(map(str, missing))}` do not exist')
        self._dict_replace(column, {key: value for key, value in self._row[column].items() if key not in keys})

    def _dict_replace(self, column: str, value: dict[str, Any]) -> None:
        previous = self._row[column]
        try:
            self._set_field(column, value)
        except BaseException:
            self._row[column] = previous
            raise


class ExtrasMixin(JsonDictMixin):
    """``extras`` methods, shared by nodes and groups (the ``extras`` JSON column)."""

    @property
    def extras(self) -> dict[str, Any]:
        return self._row['extras']

    def get_extra(self, key: str) -> Any:
        """The value of an extra; ``AttributeError`` (``NotExistentAttributeError``) if absent."""
        return self._dict_get('extras', key)

    def get_extra_many(self, keys: Iterable[str]) -> list[Any]:
        """The values of several extras, in order."""
        return [self._dict_get('extras', key) for key in keys]

    def set_extra(self, key: str, value: Any) -> None:
        """Set an extra (cleaned and written at once if stored)."""
        self._dict_set_many('extras', {key: value})

    def set_extra_many(self, extras: Mapping[str, Any]) -> None:
        """Set several extras at once."""
        self._dict_set_many('extras', extras)

    def reset_extras(self, extras: Mapping[str, Any]) -> None:
        """Replace all extras."""
        self._dict_set_many('extras', extras, reset=True)

    def delete_extra(self, key: str) -> None:
        """Delete an extra; ``AttributeError`` if absent."""
        self._dict_delete_many('extras', [key])

    def delete_extra_many(self, keys: Iterable[str]) -> None:
        """Delete several extras; ``AttributeError`` (nothing deleted) if any is absent."""
        self._dict_delete_many('extras', keys)

    def clear_extras(self) -> None:
        """Delete all extras."""
        self._dict_replace('extras', {})

    def extras_items(self) -> Iterator[tuple[str, Any]]:
        yield from self._row['extras'].items()

    def extras_keys(self) -> Iterator[str]:
        yield from self._row['extras'].keys()


class BackendCollection(Generic[E]):
    """The entities of one table: create, get, all, count, delete."""

    ENTITY_CLASS: ClassVar[type[BackendEntity]]

    def __init__(self, backend: StorageBackend) -> None:
        self._backend = backend

    @property
    def backend(self) -> StorageBackend:
        return self._backend

    def _table(self) -> Table:
        return self.ENTITY_CLASS.TABLE

    def _select(self, filters: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        table = self._table()
        clauses, params = [], []
        for name, value in filters.items():
            column = table.column('id' if name == 'pk' else name)
            if isinstance(value, Mapping) and set(value) == {'in'}:
                clauses.append(f'{quote_identifier(column.name)} IN (SELECT value FROM json_each(?))')
                params.append(encode_json(list(value['in'])))
            else:
                encode = ENCODERS.get(column.kind, _identity)
                clauses.append(f'{quote_identifier(column.name)} = ?')
                params.append(encode(value))
        where = (' WHERE ' + ' AND '.join(clauses)) if clauses else ''
        return select_sql(table) + where + ' ORDER BY id', tuple(params)

    def _rows(self, filters: Mapping[str, Any]) -> list[Any]:
        sql, params = self._select(filters)
        connection = self._backend.get_session()
        with translate_errors():
            cursor = connection.execute(sql, params)
            names = [description[0] for description in cursor.description]
            return [dict(zip(names, values)) for values in cursor.fetchall()]

    def find(self, **filters: Any) -> list[E]:
        """Stored entities whose columns equal the given values (``{'in': [...]}`` for a set), in id order."""
        return [self.ENTITY_CLASS.from_row(self._backend, row) for row in self._rows(filters)]  # type: ignore[misc]

    def get(self, pk: int | None = None, **filters: Any) -> E:
        """The one entity with this pk (or these column values); ``NotExistent`` if there is none."""
        if pk is not None:
            filters['id'] = pk
        found = self.find(**filters)
        if not found:
            raise NotExistent(f'{self.ENTITY_CLASS.__name__} with {filters!r} not found')
        if len(found) > 1:
            from sqlitedos.exceptions import MultipleObjectsError

            raise MultipleObjectsError(f'{len(found)} {self.ENTITY_CLASS.__name__} entities match {filters!r}')
        return found[0]

    def all(self) -> list[E]:
        """Every stored entity, in id order."""
        return self.find()

    def count(self) -> int:
        """The number of stored entities."""
        with translate_errors():
            sql = f'SELECT count(*) FROM {quote_identifier(self._table().name)}'
            return self._backend.get_session().execute(sql).fetchone()[0]

    def create(self, *args: Any, **kwargs: Any) -> E:
        """A new, unstored entity (the arguments are those of the entity class after the storage)."""
        # ENTITY_CLASS is the base class here: a ClassVar cannot be typed with the collection's type variable
        return self.ENTITY_CLASS(self._backend, *args, **kwargs)  # type: ignore[return-value]

    def delete(self, pk: int) -> None:
        """Delete the entity with this pk; ``NotExistent`` if there is none."""
        if not isinstance(pk, int) or isinstance(pk, bool):
            raise TypeError(f'pk must be an int, got {type(pk).__name__}: {pk!r}')
        self._delete_ids([pk], strict=True)

    def delete_many(self, filters: Mapping[str, Any]) -> list[int]:
        """Delete the entities matching ``filters`` (column -> value or ``{'in': [...]}``); returns their pks."""
        if not isinstance(filters, Mapping):
            raise TypeError(f'filters must be a dictionary, got {type(filters).__name__}')
        if not filters:
            raise ValidationError('filters must not be empty')
        pks = [row['id'] for row in self._rows(filters)]
        self._delete_ids(pks, strict=False)
        return pks

    def delete_all(self) -> None:
        """Delete every entity of this collection."""
        self._delete_ids([row['id'] for row in self._rows({})], strict=False)

    def _delete_ids(self, pks: list[int], strict: bool) -> None:
        table = quote_identifier(self._table().name)
        with self._backend.transaction() as connection, translate_errors():
            sql = f'DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))'
            cursor = connection.execute(sql, (encode_json(pks),))
            if strict and cursor.rowcount == 0:
                raise NotExistent(f'{self.ENTITY_CLASS.__name__} with pk {pks[0]!r} not found')


def new_row_uuid() -> str:
    """A fresh uuid for a new row (aiida's default)."""
    return new_uuid()
