"""The database's clock in SQL, to the millisecond, on PostgreSQL and SQLite alike.

Heartbeats and their staleness are judged by one clock, the database's, so that processes on
different machines agree on which answer is still alive. Times are kept to the millisecond,
the precision the API shows, so what a cursor encodes is exactly what is stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Float
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

__all__ = ("db_now", "db_now_minus")

# SQLAlchemy's SQLite DATETIME is text, 'YYYY-MM-DD HH:MM:SS.ffffff'; %f gives 'SS.SSS', so three
# zeros make the microseconds, and text comparison orders these like the times they are.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now'"


class _Now(FunctionElement[datetime]):
    type = DateTimeUTC()
    inherit_cache = True
    name = "db_now"


class _NowMinus(FunctionElement[datetime]):
    type = DateTimeUTC()
    inherit_cache = True
    name = "db_now_minus"


def db_now() -> ColumnElement[datetime]:
    """The database's current time, to the millisecond."""
    return _Now()


def db_now_minus(seconds: float) -> ColumnElement[datetime]:
    """The database's current time less ``seconds``."""
    from sqlalchemy import literal

    return _NowMinus(literal(float(seconds), Float()))


@compiles(_Now, "postgresql")
def _now_postgresql(element: _Now, compiler: Any, **kw: Any) -> str:
    return "date_trunc('milliseconds', clock_timestamp())"


@compiles(_Now, "sqlite")
def _now_sqlite(element: _Now, compiler: Any, **kw: Any) -> str:
    return _SQLITE_NOW + ")"


@compiles(_NowMinus, "postgresql")
def _now_minus_postgresql(element: _NowMinus, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(date_trunc('milliseconds', clock_timestamp()) - make_interval(secs => {seconds}))"


@compiles(_NowMinus, "sqlite")
def _now_minus_sqlite(element: _NowMinus, compiler: Any, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"{_SQLITE_NOW}, '-' || {seconds} || ' seconds')"
