"""Nylas: SDK calls, what a notification does, and the sync and reconcile sweep."""
