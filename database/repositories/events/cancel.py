"""Cancelling an event that no worker has taken yet (API.md "Events": cancel): a lifecycle
write (lifecycle.py), kept importable here under its old name."""

from __future__ import annotations

from database.repositories.events.lifecycle import cancel as cancel
