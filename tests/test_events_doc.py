"""docs/events.md's receiver example works as written: it accepts a delivery signed by the
Standard Webhooks library with the endpoint's secret, acknowledges a retry of it without
handling it twice, and refuses a tampered body, a wrong secret and an old timestamp."""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"


def _receiver(secret: str) -> dict[str, Any]:
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, Any] = {"SECRET": secret}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def _signed(secret: str, event: dict[str, Any], at: datetime) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    signature = Webhook(secret).sign(event["id"], at, body.decode())
    return body, {
        "webhook-id": event["id"],
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def test_the_documented_receiver_verifies_dedupes_and_refuses(capsys) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    ns = _receiver(secret)
    event = {
        "id": "8c1f0f9e-2d4b-4c55-9a0e-1b7f5f0b6a21",
        "type": "message.created",
        "timestamp": "2026-12-07T10:15:30Z",
        "seq": 1,
        "data": {"message": {"subject": "Quarterly report", "from": {"email": "a@example.org"}}},
    }
    now = datetime.now(UTC)
    body, headers = _signed(secret, event, now)

    assert ns["receive"](body, headers) == 204
    assert "new mail Quarterly report from a@example.org" in capsys.readouterr().out
    assert ns["receive"](body, headers) == 200  # the retry: acknowledged, not handled again
    assert capsys.readouterr().out == ""

    assert ns["receive"](body.replace(b"Quarterly", b"Quarterlz"), headers) == 400
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    assert _receiver(other)["receive"](body, headers) == 400
    old_body, old_headers = _signed(secret, {**event, "id": "x-old"}, now - timedelta(hours=1))
    assert ns["receive"](old_body, old_headers) == 400
