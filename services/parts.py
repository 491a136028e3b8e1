"""The bookkeeping of bulk work cut into bounded parts: what one part leaves for the next.

A part (an IMAP, POP3 or Nylas sync, a mass delete) stops when its `Budget` is spent and
the worker hands the same event on to a new task (worker.execution CONTINUED). The event's
progress carries everything the next part needs, in one shape for every kind of work:

    {"current", "total", "parts", "continues": true, "synced", "totals", "resume"}

`synced` is how many messages all parts so far have done, `totals` their counts summed, and
`resume` what the next part is given to go on where this one stopped. The part that ends
the work leaves `continues` out, so a replay of the finished job starts afresh.
"""

from __future__ import annotations

from typing import Any


def add_counts(
    before: dict[str, Any],
    counts: dict[str, int],
    *,
    done: int,
    cut: bool,
    resume: dict[str, Any] | None,
    total: int | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """(the event's new progress, the counts of every part so far).

    `before` is the progress the earlier parts left ({} for the first), `counts` and `done`
    this part's; `total`, when the whole is known (a delete's ids), is shown as such.
    """
    earlier = before.get("totals") or {}
    totals = {k: int(earlier.get(k, 0)) + int(v) for k, v in counts.items()}
    parts = int(before.get("parts", 0)) + 1
    synced = int(before.get("synced", 0)) + done
    state: dict[str, Any] = {"current": synced, "total": synced if total is None else total}
    if parts > 1:
        state["parts"] = parts
    if cut:
        state.update(continues=True, parts=parts, synced=synced, totals=totals, resume=resume)
    return state, totals
