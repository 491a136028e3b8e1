"""Thumbnails of image attachments (API.md "Message extras"), made after a sync.

Decoding an image is the riskiest parse postroom does: a decompression bomb asks for
gigabytes, a crafted file may spin a decoder. So every image is decoded in a child process of
its own (`python -m services.messages.thumbnail_child`) under RLIMIT_CPU and RLIMIT_AS, with a
wall-clock deadline and a pixel cap in front of the decoder; the worker only moves bytes.
A refused image gets a `failed` row (404 `thumbnail_not_available` for good) and its mail is
unaffected: the sync has committed long before.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Event
from database.repositories.messages import thumbnails as repo
from database.task_names import TaskName
from services.errors import NotFound, ThumbnailNotAvailable, TransientError
from services.events.unit_of_work import Job, record_event

log = structlog.get_logger(__name__)

MAX_SIDE = 256
# Larger sources are not decoded at all (a photo is a few MB).
MAX_SOURCE_BYTES = 25 * 1024 * 1024
# The child's limits: CPU seconds (interpreter start included), address space, wall time.
CHILD_CPU_S = 4
CHILD_MEMORY_BYTES = 768 * 1024 * 1024
CHILD_WALL_S = 15.0
MAX_OUTPUT_BYTES = 2 * 1024 * 1024
# Images read per query; a task part stops after its time budget and the next part goes on.
BATCH = 20


@dataclass(frozen=True)
class Rendered:
    """A thumbnail, or the reason there is none."""

    media_type: str | None = None
    content: bytes | None = None
    width: int | None = None
    height: int | None = None
    reason: str | None = None


def _limit_child() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_S, CHILD_CPU_S + 1))
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child_env() -> dict[str, str]:
    keep = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    # The child needs only Pillow and the module itself: no settings, no secrets.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


async def render(data: bytes, *, side: int = MAX_SIDE) -> Rendered:
    """The thumbnail of `data` made in a limited child process; a refusal says why."""
    if len(data) > MAX_SOURCE_BYTES:
        return Rendered(reason="too_large")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-s",
            "-m",
            "services.messages.thumbnail_child",
            str(side),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_limit_child,
            env=_child_env(),
        )
    except OSError as exc:  # no process to decode in: the machine's trouble, not the image's
        raise TransientError(f"Could not start the image decoder ({type(exc).__name__}).") from None
    try:
        async with asyncio.timeout(CHILD_WALL_S):
            out, _ = await proc.communicate(data)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Rendered(reason="time_limit")
    if proc.returncode == 0:
        media, dims, content = out.split(b"\n", 2)
        width, height = (int(v) for v in dims.split())
        if len(content) > MAX_OUTPUT_BYTES:
            return Rendered(reason="too_large")
        return Rendered(media.decode(), content, width, height)
    if proc.returncode == 3:
        return Rendered(reason=out[:64].decode("ascii", "replace") or "unreadable")
    # Killed by RLIMIT_CPU (SIGXCPU/SIGKILL) or failed to allocate under RLIMIT_AS.
    return Rendered(reason="resource_limit")


async def make_thumbnails(
    db: Database,
    *,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    since: datetime,
    budget_s: float,
) -> tuple[dict[str, Any], bool]:
    """Thumbnails for the account's images stored since `since`: (counts, cut). Owns its
    transactions; none is open while an image is decoded."""
    made = refused = 0
    deadline = time.monotonic() + budget_s
    while True:
        async with db.transaction() as s:
            images = await repo.pending(
                s, tenant_id=tenant_id, account_id=account_id, since=since, limit=BATCH
            )
        if not images:
            return {"thumbnails": made, "refused": refused}, False
        for image in images:
            if time.monotonic() > deadline:
                return {"thumbnails": made, "refused": refused}, True
            async with db.transaction() as s:
                data = await repo.content(s, image.attachment_id)
            result = await render(data) if data else Rendered(reason="no_content")
            values: dict[str, Any] = (
                {"status": "failed", "reason": result.reason}
                if result.content is None
                else {
                    "status": "ready",
                    "content_type": result.media_type,
                    "content": result.content,
                    "width": result.width,
                    "height": result.height,
                }
            )
            async with db.transaction() as s:
                await repo.save(s, tenant_id=tenant_id, image=image, **values)
            if result.content is None:
                refused += 1
                log.info(
                    "thumbnail_refused",
                    attachment_id=str(image.attachment_id),
                    reason=result.reason,
                )
            else:
                made += 1


async def purge_deleted(db: Database, *, limit: int = 5000) -> int:
    """The cleanup beat task's part: thumbnails of deleted messages go."""
    async with db.transaction() as s:
        return await repo.delete_of_deleted_messages(s, limit=limit)


async def get_thumbnail(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    attachment_id: uuid.UUID,
) -> tuple[str, bytes]:
    """(media type, bytes) of a ready thumbnail; 404 not_found for no such attachment of the
    tenant, 404 thumbnail_not_available while there is none (yet, or ever)."""
    found, thumb = await repo.for_attachment(
        session, tenant_id=tenant_id, message_id=message_id, attachment_id=attachment_id
    )
    if not found:
        raise NotFound("No such attachment.")
    if thumb is None or thumb.status != "ready" or not thumb.content or not thumb.content_type:
        raise ThumbnailNotAvailable(
            "This attachment has no thumbnail: it is not a supported image, it was refused, "
            "or it has not been made yet."
        )
    return thumb.content_type, thumb.content


async def start_thumbnails(
    session: AsyncSession,
    *,
    parent: Event,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    account_id: uuid.UUID,
    stale_after_s: float,
) -> list[Job]:
    """In a sync's transaction, when it brought new mail: one thumbnail job for the images
    stored since the sync was asked for (every part of it), if it stored any. Published after
    the commit."""
    since = parent.received_at
    waiting = await repo.pending(
        session, tenant_id=tenant_id, account_id=account_id, since=since, limit=1
    )
    if not waiting:
        return []
    kwargs = {
        "account_id": str(account_id),
        "tenant_id": str(tenant_id),
        "user_id": str(user_id) if user_id else None,
        "since": since.isoformat(),
    }
    job = await record_event(
        session,
        task_name=TaskName.generate_thumbnail,
        kwargs=kwargs,
        source=parent.source,
        type="mail.thumbnails",
        external_id=f"{parent.id}:thumbnails:{parent.attempts}",
        payload={"parent_event_id": str(parent.id), "kwargs": kwargs},
        stale_after_s=stale_after_s,
        tenant_id=tenant_id,
        user_id=user_id,
        account_id=account_id,
        request_id=parent.request_id,
    )
    return [job] if job is not None else []
