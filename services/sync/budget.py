"""`Budget`: what one bounded part of bulk work may spend (services.parts): a sync of any
provider, a mass delete."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Budget:
    """What one part of a sync may spend: messages stored and seconds since it started."""

    messages: int
    seconds: float
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.started or time.monotonic()

    def spent(self, messages: int) -> bool:
        return messages >= self.messages or time.monotonic() - self.started >= self.seconds
