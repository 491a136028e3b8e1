"""`SyncResult`: what one part of an IMAP or POP3 sync did, and where the next part resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncResult:
    folders: int = 0
    new: int = 0
    updated: int = 0
    deleted: int = 0
    # A part cut by its budget: the folders finished in this sync so far and the one it was
    # in (resume where it stopped: `run_sync(resume=...)`).
    cut: bool = False
    done: list[str] = field(default_factory=list)
    partial: str | None = None

    def resume(self) -> dict[str, Any]:
        return {"done": self.done, "partial": self.partial}

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "success",
            "folders": self.folders,
            "new": self.new,
            "updated": self.updated,
            "deleted": self.deleted,
        }
