"""Hot-path statements run on SQLite straight through the sqlite3 cursor.

SQLAlchemy's ``Connection.execute`` of a statement built once still costs about
20 µs of Python per call (the compiled-cache lookup, parameter processing, the
result's metadata), the cursor about 2: on the result path, with eight statements
per job, that was a tenth of the coordinator's CPU. :class:`Prepared` compiles its
statement once per dialect and keeps what the execution needs (the SQL, the order
of its parameters with their fixed values and the column types' conversions, the
result columns' conversions); on SQLite it hands that to the cursor of the unit's
connection, inside the same transaction (the Writer's BEGIN IMMEDIATE, its
savepoints). Anything else (PostgreSQL) is an ordinary ``execute``, and so is a
statement this cannot compile once (an expanding ``IN``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.expression import Executable

_MISSING = object()


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    # For each positional parameter: the caller's key, the fixed value when the caller
    # gives none, and the type's conversion (None: the value as it is).
    params: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    columns: tuple[str, ...]  # of the result (RETURNING, SELECT)
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column, conversion)


class Prepared:
    """``statement`` (built once), executable with the fast path; ``column_keys``: the
    columns an INSERT is given (all of them, so no column default applies)."""

    def __init__(self, statement: Executable, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self._keys = list(column_keys) if column_keys is not None else None
        self._sqlite: _Compiled | None = None
        self._tried = False  # compiled for SQLite (None there: leave it to SQLAlchemy)

    def _compiled(self, db: Connection) -> _Compiled | None:
        if db.dialect.name != "sqlite":
            return None
        if not self._tried:
            self._sqlite, self._tried = _compile(self.statement, db, self._keys), True
        return self._sqlite

    def first(self, db: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of the result as {column: value} (None: no row)."""
        compiled = self._compiled(db)
        if compiled is None:
            row = db.execute(self.statement, dict(params)).first()
            return None if row is None else dict(row._mapping)
        cursor = _driver(db).execute(compiled.sql, _values(compiled, params))
        try:
            found = cursor.fetchone()
        finally:
            cursor.close()
        if found is None:
            return None
        values = list(found)
        for index, convert in compiled.converters:
            values[index] = convert(values[index])
        return dict(zip(compiled.columns, values, strict=True))

    def rowcount(self, db: Connection, params: Mapping[str, Any]) -> int:
        """Run it; how many rows it changed."""
        compiled = self._compiled(db)
        if compiled is None:
            return int(db.execute(self.statement, dict(params)).rowcount)
        cursor = _driver(db).execute(compiled.sql, _values(compiled, params))
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def many(self, db: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run it once per row of parameters (an INSERT of several rows)."""
        compiled = self._compiled(db)
        if compiled is None:
            db.execute(self.statement, [dict(row) for row in rows])
            return
        _driver(db).executemany(compiled.sql, [_values(compiled, row) for row in rows]).close()


def _driver(db: Connection) -> Any:
    return db.connection.driver_connection


def _values(compiled: _Compiled, params: Mapping[str, Any]) -> list[Any]:
    values = []
    for key, fixed, convert in compiled.params:
        value = params.get(key, _MISSING)
        if value is _MISSING:
            if fixed is _MISSING:
                raise KeyError(f"the statement needs a value for {key!r}")
            value = fixed
        values.append(convert(value) if convert is not None and value is not None else value)
    return values


def _compile(statement: Executable, db: Connection, keys: list[str] | None) -> _Compiled | None:
    compiled: Any = statement.compile(dialect=db.dialect, column_keys=keys)  # type: ignore[attr-defined]
    if compiled.positiontup is None or any(
        bind.expanding or bind.literal_execute for bind in compiled.binds.values()
    ):
        return None  # rendered anew per execution: leave it to SQLAlchemy
    processors = compiled._bind_processors
    params = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        fixed = _MISSING if bind.required else bind.effective_value
        params.append((bind.key, fixed, processors.get(name)))
    columns, converters = [], []
    for index, column in enumerate(compiled._result_columns):
        columns.append(column.keyname)
        convert = column.type._cached_result_processor(db.dialect, None)
        if convert is not None:
            converters.append((index, convert))
    return _Compiled(compiled.string, tuple(params), tuple(columns), tuple(converters))
