"""The engine's view of a run's plan (`Steps`) lives in services.events.steps, where the
inline classify run (services.classify.inline) records its steps through it too."""

from __future__ import annotations

from services.events.steps import ENDED, Steps, new_plan, plan_for

__all__ = ["ENDED", "Steps", "new_plan", "plan_for"]
