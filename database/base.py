"""Shared column helpers and the naming convention that keeps constraint names stable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION


def utcnow() -> datetime:
    return datetime.now(UTC)


def id_field() -> Any:
    return Field(default_factory=uuid.uuid4, primary_key=True)


def ts_field(*, nullable: bool = False, index: bool = False) -> Any:
    """A timestamptz column; non-null ones default to now on the Python and the server side."""
    if nullable:
        return Field(
            default=None,
            sa_column_kwargs={"nullable": True},
            sa_type=sa.DateTime(timezone=True),
            index=index,
        )
    return Field(
        default_factory=utcnow,
        sa_type=sa.DateTime(timezone=True),
        sa_column_kwargs={"server_default": sa.func.now(), "nullable": False},
        index=index,
    )


def fk_field(
    target: str, *, nullable: bool = False, index: bool = True, ondelete: str = "CASCADE"
) -> Any:
    return Field(  # type: ignore[call-overload]
        default=None if nullable else ...,
        sa_column_kwargs={"nullable": nullable},
        sa_type=sa.Uuid,
        foreign_key=target,
        ondelete=ondelete,
        index=index,
    )


def jsonb_field(default_factory: Any = dict, *, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=JSONB, sa_column_kwargs={"nullable": True})
    return Field(
        default_factory=default_factory, sa_type=JSONB, sa_column_kwargs={"nullable": False}
    )
