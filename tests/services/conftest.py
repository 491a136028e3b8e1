"""Fixtures of outbound-event tests (tests/services/webhook_support.py)."""

from tests.services.webhook_support import receiver, start_deliverer

__all__ = ["receiver", "start_deliverer"]
