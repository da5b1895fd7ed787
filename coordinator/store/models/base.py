"""The declarative base and the text folding that search columns share."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


def fold(text: str) -> str:
    """Text as search compares it: Unicode case folding ("СТУЛ" and "стул" match), done
    in Python because SQLite's LIKE folds ASCII only and PostgreSQL's depends on the
    database's locale."""
    return text.casefold()


class Base(DeclarativeBase):
    pass
