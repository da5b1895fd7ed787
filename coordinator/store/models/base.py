"""The declarative base and the text folding that search columns share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy.orm import DeclarativeBase


def fold(text: str) -> str:
    """Text as search compares it: Unicode case folding ("СТУЛ" and "стул" match), done
    in Python because SQLite's LIKE folds ASCII only and PostgreSQL's depends on the
    database's locale."""
    return text.casefold()


class Base(DeclarativeBase):
    pass


B = TypeVar("B", bound=Base)


def loaded(cls: type[B], values: Mapping[str, Any]) -> B:
    """A detached ``cls`` holding a row's column values, as a query would load it: the
    values go straight into the instance's dict (the constructor's change events for
    every column cost 30 times more). For rows read, or written, through Core (never
    added to a session), keyed by column keys (unchecked: no typos)."""
    obj: B = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    obj.__dict__.update(values)
    return obj
