"""Workflows: chains of tasks over one event row, each step handing the event to the next.

Why not Celery's `chain()`: its plan travels inside the message, so a step that dies for good
loses the rest of the chain with it; replaying "from the failed step" then means rebuilding a
signature by hand, and error callbacks on nested or joined chains have been lost (Celery
issues 4232, 4763) while retries inside a chain duplicated links (2759). Here the plan is the
event's `steps` column (plans: services.events.workflows.PLANS). A step runs through the same engine
as any event-backed task (worker.execution); when it succeeds, the same transaction marks it
done and re-queues the event under the next step's task name, and the new task is published
after the commit (the outbox sweeper re-publishes it if that publish is lost). A step that
fails for good leaves a dead letter naming the step and the run (the event id), and the
event keeps the failed step's task name, so replaying it runs that step again, not the chain.

`Steps` is the engine's view of where a run is in its plan. A task that is not a workflow
step runs as a plan of one step that is not stored on the event: its attempts and retry
budget are the event's own (worker.execution.retries_used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Event
from database.repositories.events import lifecycle as repo
from database.repositories.events.lifecycle import Step, StepState
from services.events.workflows import STEP_TASKS, steps_of

# A step found in one of these states when its run is claimed was replayed by a person: its
# retry budget starts again from there (as an event's does from its `replayed` history entry).
ENDED = (StepState.dead, StepState.failed)


def new_plan(workflow: str | None, task_name: str) -> list[Step]:
    """A run's steps before its first step runs: its workflow's plan, or the task alone."""
    return [
        Step(name=n, task=STEP_TASKS[n], state=StepState.pending, attempts=0)
        for n in steps_of(workflow, task_name)
    ]


def plan_for(event: Event, task_name: str) -> list[Step]:
    """The event's steps, made from its workflow's plan (or the task alone) on first run."""
    if event.steps:
        return [Step(**s) for s in event.steps]  # type: ignore[typeddict-item]
    return new_plan((event.task_kwargs or {}).get("workflow"), task_name)


def _current(steps: list[Step]) -> int:
    """The first step not done; a replay of a finished run runs the whole plan again."""
    for i, step in enumerate(steps):
        if step["state"] != StepState.succeeded:
            return i
    for step in steps:
        step["state"], step["attempts_before"] = StepState.pending, int(step.get("attempts", 0))
    return 0


def _start(step: Step, *, task_id: str, attempts: int) -> None:
    """A step's run begins: running, its attempts so far, under this task id."""
    step["state"], step["attempts"] = StepState.running, attempts
    step["task_id"], step["error"] = task_id, None


@dataclass
class Steps:
    """The plan of one run and the step it is on; `stored` plans live in the event's `steps`."""

    steps: list[Step]
    i: int
    stored: bool

    @classmethod
    async def begin(
        cls, session: AsyncSession, *, event: Event, task_name: str, task_id: str, stored: bool
    ) -> Steps:
        """In the claim's transaction: the step this run is, marked running (one attempt more)."""
        if not stored:
            return cls([Step(name="", task=task_name, state=StepState.running)], 0, False)
        steps = plan_for(event, task_name)
        i = _current(steps)
        step = steps[i]
        attempts = int(step.get("attempts", 0))
        if step["state"] in ENDED:
            step["attempts_before"] = attempts
        _start(step, task_id=task_id, attempts=attempts + 1)
        await repo.set_steps(session, event_id=event.id, task_id=task_id, steps=steps)
        return cls(steps, i, True)

    @classmethod
    def ran_inline(cls, workflow: str, runs: dict[str, tuple[str, dict[str, Any]]]) -> Steps:
        """A stored plan whose every step succeeded at its first attempt inside another
        transaction (services.classify.inline): `runs` maps each step to (task id, result)."""
        done = cls(new_plan(workflow, ""), 0, True)
        for i, step in enumerate(done.steps):
            task_id, result = runs[step["name"]]
            done.i = i
            _start(step, task_id=task_id, attempts=1)
            done.ended(StepState.succeeded, result=result)
        return done

    @property
    def current(self) -> Step:
        return self.steps[self.i]

    @property
    def name(self) -> str:
        return str(self.current["name"])

    @property
    def next(self) -> Step | None:
        """The step to hand the event on to, or None when this is the last one."""
        return self.steps[self.i + 1] if self.i + 1 < len(self.steps) else None

    def attempts(self, event: Event) -> int:
        """This step's attempts, this one included (shown in dead letters)."""
        return int(self.current["attempts"]) if self.stored else event.attempts

    def retries_used(self, event: Event, since_replay: int) -> int:
        """Attempts before this one since the step last started afresh (or was replayed).

        `since_replay` is the event's own count (worker.execution.retries_used), which is the
        step's when the plan is not stored.
        """
        if not self.stored:
            return since_replay
        step = self.current
        return max(int(step["attempts"]) - 1 - int(step.get("attempts_before", 0)), 0)

    def part_done(self) -> None:
        """A bounded part of the step ended (worker.execution CONTINUED): not an attempt."""
        if self.stored:
            step = self.current
            step["state"], step["attempts"] = StepState.running, int(step.get("attempts", 0)) - 1

    def ended(
        self, state: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        self.current["state"] = state
        if result is not None:
            self.current["result"] = result
        if error is not None:
            self.current["error"] = error

    def uncount(self) -> None:
        """The attempt only waited for an IMAP slot (AccountBusy): it does not count."""
        if self.stored:
            self.current["attempts"] = int(self.current.get("attempts", 0)) - 1

    def finish_all(self) -> None:
        """The run ends with this step: the steps after it will not run."""
        for later in self.steps[self.i + 1 :]:
            later["state"] = StepState.skipped

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        """A run's result: a plan of several steps adds every step's state."""
        if len(self.steps) < 2:
            return result
        return {**result, "steps": {s["name"]: s["state"] for s in self.steps}}

    async def save(self, session: AsyncSession, *, event: Event, task_id: str) -> bool:
        """Write the step states (only while this run owns the event); True when unstored."""
        if not self.stored:
            return True
        return await repo.set_steps(session, event_id=event.id, task_id=task_id, steps=self.steps)
