"""Reply text: scored on the labelled sample, and linear on hostile bodies."""

from __future__ import annotations

import time

import pytest

from services.messages.reply_text import reply_text
from tests.services.reply_text_samples import SAMPLES


def _norm(text: str | None) -> str:
    out: list[str] = []
    for line in (text or "").strip().split("\n"):
        line = line.strip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


@pytest.mark.parametrize(("name", "body", "expected"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_reply_text_of_the_labelled_sample(name: str, body: str, expected: str) -> None:
    assert _norm(reply_text(body)) == _norm(expected)


def test_no_body_no_reply_text() -> None:
    assert reply_text(None) is None
    assert reply_text("") == ""


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "On " * n + "\n",  # mail-parser-reply took 196 s for 16,000 of these
        lambda n: "x\n" + "From: a\nSent: b\n" * n,
        lambda n: ">" * (10 * n) + "\n",
        lambda n: ("> quoted\n" * n) + "new text",
        lambda n: "On a\n" * n,
        lambda n: ("word " * 100 + "\n") * (n // 20),
    ],
)
def test_reply_text_costs_linear_time(make) -> None:
    def cost(n: int) -> float:
        body = make(n)
        best = 1e9
        for _ in range(5):  # CPU time, best of 5: neighbours on a busy machine add wall time
            start = time.process_time()
            reply_text(body)
            best = min(best, time.process_time() - start)
        return best

    small, large = cost(2000), cost(16000)
    assert large < 0.5
    assert large < max(small, 0.002) * 12, (small, large)
