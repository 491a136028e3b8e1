"""The delivery-report parser beside flufl.bounce on the labelled bounce corpus (the
flufl.bounce 6.0.0 fixtures, Apache-2.0) and the SpamAssassin ham folders; and the parse cost
of ordinary mail with and without the report check (the quick header check must keep it
cheap). docs/reports.md "Measured" holds the figures."""

from __future__ import annotations

import statistics
import time

from scripts.corpus import messages as ham_files
from scripts.corpus import raw_message
from scripts.report_scores import score, summary
from services.messages import mime


def _cost(raws: list[bytes], *, check: bool) -> float:
    """Median seconds per message of mime.parse over `raws` (report check on or off)."""
    real = mime.detect_report
    if not check:
        mime.detect_report = lambda *a, **k: None  # type: ignore[assignment]
    try:
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            for raw in raws:
                mime.parse(raw)
            runs.append((time.perf_counter() - start) / len(raws))
        return statistics.median(runs)
    finally:
        mime.detect_report = real  # type: ignore[assignment]


def main() -> None:
    print(summary(score(ham=True)))
    raws = [raw_message(p) for p in list(ham_files("easy-ham-2"))[:500]]
    without, with_check = _cost(raws, check=False), _cost(raws, check=True)
    print(
        f"parse cost of ordinary mail (easy-ham-2, {len(raws)} messages): "
        f"{without * 1e6:.0f} us without the report check, {with_check * 1e6:.0f} us with it "
        f"(+{(with_check / without - 1) * 100:.1f}%)"
    )


if __name__ == "__main__":
    main()
