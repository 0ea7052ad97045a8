"""sqlitedos' exceptions raised as aiida's: aiida's front end and its users catch ``aiida.common.exceptions``.

sqlitedos' exception classes carry aiida's names (``NotExistent``, ``UniquenessError``, ...), so each maps onto the
aiida class of the same name; a class aiida lacks becomes a subclass of the mapping of its own bases, keeping the
builtin bases (``FileNotFoundError``, ``ValueError``, ...) that callers also catch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aiida.common import exceptions as aiida_exceptions

from sqlitedos import exceptions as sqlitedos_exceptions

__all__ = ('aiida_error_class', 'translated_errors', 'translating', 'translating_methods')

#: aiida's SQL backends raise ``IntegrityError`` where sqlitedos names the broken rule (a duplicate group label):
#: the translated class is both, so either ``except`` catches it.
ALSO_RAISED_AS = {'UniquenessError': ('IntegrityError',)}

F = TypeVar('F', bound=Callable[..., Any])
T = TypeVar('T', bound=type)


@functools.cache
def aiida_error_class(cls: type[BaseException]) -> type[BaseException]:
    """The aiida exception class that stands for sqlitedos' exception class ``cls`` (``cls`` itself if foreign)."""
    if not issubclass(cls, sqlitedos_exceptions.AiidaException):
        return cls
    if cls.__module__ == sqlitedos_exceptions.__name__:
        same_name = getattr(aiida_exceptions, cls.__name__, None)
        if isinstance(same_name, type) and issubclass(same_name, aiida_exceptions.AiidaException):
            also = tuple(getattr(aiida_exceptions, name) for name in ALSO_RAISED_AS.get(cls.__name__, ()))
            if also:
                return type(cls.__name__, (same_name, *also), {'__module__': __name__, '__doc__': cls.__doc__})
            return same_name
    bases = tuple(dict.fromkeys(aiida_error_class(base) for base in cls.__bases__))
    return type(cls.__name__, bases, {'__module__': __name__, '__doc__': cls.__doc__})


def _translate(exc: BaseException) -> BaseException | None:
    if not isinstance(exc, sqlitedos_exceptions.AiidaException):
        return None
    # a class is hashable, but mypy checks the class object against its instances' ``__hash__`` (python/mypy#11470)
    translated = aiida_error_class(type(exc))(*exc.args)  # type: ignore[arg-type]
    translated.__cause__ = exc
    return translated


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise a sqlitedos exception from the block as the aiida exception of the same name."""
    try:
        yield
    except sqlitedos_exceptions.AiidaException as exc:
        raise _translate(exc) from exc  # type: ignore[misc]


def translating(function: F) -> F:
    """``function`` with sqlitedos exceptions re-raised as aiida's."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except sqlitedos_exceptions.AiidaException as exc:
            raise _translate(exc) from exc  # type: ignore[misc]

    return wrapper  # type: ignore[return-value]


def _wrapped(attribute: Any) -> Any:
    """``attribute`` (a function, property, static or class method) with its calls translated; None if not callable."""
    if isinstance(attribute, property):
        return property(
            attribute.fget and translating(attribute.fget),
            attribute.fset and translating(attribute.fset),
            attribute.fdel and translating(attribute.fdel),
            attribute.__doc__,
        )
    if isinstance(attribute, staticmethod):
        return staticmethod(translating(attribute.__func__))
    if isinstance(attribute, classmethod):
        return classmethod(translating(attribute.__func__))
    if callable(attribute) and not isinstance(attribute, type):
        return translating(attribute)
    return None


def translating_methods(cls: T) -> T:
    """Class decorator: every public method and property that ``cls`` inherits from sqlitedos' own classes raises
    aiida's exceptions. Attributes a class of this package defines are left as written."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        module = klass.__module__
        own = module.startswith(__package__) or not module.startswith('sqlitedos.')
        for name, attribute in list(vars(klass).items()):
            if name in seen:
                continue
            seen.add(name)
            if own or name.startswith('_'):
                continue
            wrapped = _wrapped(attribute)
            if wrapped is not None:
                setattr(cls, name, wrapped)
    return cls
