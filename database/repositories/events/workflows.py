"""Workflow runs on the event row: step states and handing the event on to the next step,
both lifecycle writes (lifecycle.py), kept importable here under their old names."""

from __future__ import annotations

from database.repositories.events.lifecycle import hand_on as hand_on
from database.repositories.events.lifecycle import set_steps as set_steps
