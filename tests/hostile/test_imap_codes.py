"""A hostile IMAP server's status line, handed over to the IMAP parser's hardening.

`services/imap_protocol.response_codes` runs `\\[([A-Z0-9.-]+)(?: ([^\\]]*))?\\]` over a whole
status line: with `[A ` repeated and no `]`, every `[` scanned to the end of the line (5,000
repeats took 2.5 s, 40,000 took 116 s). A code's text now stops at the next `[` as well.
"""

from __future__ import annotations

from services.imap.protocol import response_codes
from tests.hostile.cost import assert_linear


def status_line_open_codes(n: int) -> bytes:
    """An untagged OK whose text opens n response codes and closes none."""
    return b"* OK " + b"[A " * n


def test_response_codes_cost_grows_linearly() -> None:
    assert_linear(response_codes, status_line_open_codes, 400, attempts=1)
