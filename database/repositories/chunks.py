"""Multi-row statements cut below PostgreSQL's bind-parameter limit.

The wire protocol counts parameters in an Int16: one statement takes at most 32,767. A
multi-row INSERT binds rows x columns, so 250 messages are fine and one message with 10,000
MIME parts (ten columns each) is not: every multi-row write goes through `chunked`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

PG_MAX_PARAMS = 32_767
# Room for the parameters a statement binds besides its rows (WHERE, RETURNING).
_SPARE = 767

T = TypeVar("T")


def rows_per_statement(columns: int, *, limit: int = PG_MAX_PARAMS) -> int:
    """How many rows of `columns` values one statement may carry."""
    return max(1, (limit - _SPARE) // max(1, columns))


def chunked(rows: Sequence[T], columns: int) -> Iterator[Sequence[T]]:
    """`rows` in slices that each fit one statement."""
    step = rows_per_statement(columns)
    for i in range(0, len(rows), step):
        yield rows[i : i + step]


def width(rows: Sequence[dict[str, object]]) -> int:
    """The parameter count of one row: the widest row (SQLAlchemy binds every key given)."""
    return max((len(r) for r in rows), default=1)
