"""Template bodies (API.md "Additions": Sending, templates)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Strict
from services.outbound.templates import MAX_SOURCE_CHARS

_SOURCE = "Jinja2 syntax, rendered in a sandbox with the send's `variables` only."


class TemplateIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "subject": "Welcome, {{ name }}",
                    "text": "Hi {{ name }},\nyour code is {{ code }}.",
                    "html": "<p>Hi {{ name }}, your code is <b>{{ code }}</b>.</p>",
                }
            ]
        },
    )
    subject: str = Field(max_length=MAX_SOURCE_CHARS, description=_SOURCE)
    text: str = Field(max_length=MAX_SOURCE_CHARS, description=_SOURCE)
    html: str | None = Field(
        default=None,
        max_length=MAX_SOURCE_CHARS,
        description=_SOURCE + " Variables are HTML-escaped here (not in subject and text).",
    )


class TemplatePublic(BaseModel):
    name: str
    subject: str
    text: str
    html: str | None
    created_at: datetime
    updated_at: datetime


class TemplatePage(BaseModel):
    data: list[TemplatePublic]
    next_cursor: str | None
