"""Event, task and workflow bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import Strict


class EventPublic(BaseModel):
    id: str
    source: Literal["nylas", "api", "schedule", "push"]
    type: str
    external_id: str | None
    status: str
    attempts: int
    task_ids: list[str]
    last_error: str | None
    received_at: datetime
    finished_at: datetime | None
    send_at: datetime | None = Field(
        default=None, description="A scheduled send's time (`send_at`); null for other jobs."
    )
    coalesced_into: str | None = Field(
        default=None,
        description="A coalesced `message.updated` notification (status `succeeded`, result "
        "status `coalesced`): the event whose work stored its message's newest state; null "
        "otherwise.",
    )


class EventPage(BaseModel):
    data: list[EventPublic]
    next_cursor: str | None


class TaskStatus(BaseModel):
    task_id: str
    event_id: str
    state: Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE"]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None = None


class WorkflowRun(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"account_id": "0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11"}]},
    )
    account_id: uuid.UUID


class WorkflowPublic(BaseModel):
    name: str
    description: str
    steps: list[str]


class WorkflowList(BaseModel):
    data: list[WorkflowPublic]
