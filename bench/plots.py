"""PNG figures for docs/benchmarks.md, written by `make bench` beside the printed tables.

`line_chart` is the one drawing function: any bench (ingest, drain, SMTP) hands it named
series of (x, y) points and gets a small PNG in docs/. matplotlib is the `bench` extra of
pyproject.toml; without it the benches still print their tables and say no picture was drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

Series = dict[str, tuple[Sequence[float], Sequence[float]]]


def line_chart(
    name: str,
    panels: Sequence[tuple[str, str, str, Series]],
    *,
    logx: bool = False,
    note: str = "",
) -> Path | None:
    """Draw one PNG `docs/<name>.png` of side-by-side panels (title, x label, y label, series).

    Returns the path written, or None when matplotlib is not installed.
    """
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")  # no display on a server; also keeps a stray $DISPLAY out of it
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib missing: install the 'bench' extra to draw docs/{name}.png)")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, xlabel, ylabel, series) in zip(axes[0], panels, strict=True):
        for label, (xs, ys) in series.items():
            ax.plot(list(xs), list(ys), marker="o" if len(xs) <= 12 else None, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            # Concurrency levels: log-spaced, but labelled with the levels themselves.
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({float(x) for xs, _ in series.values() for x in xs}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    path = DOCS / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote docs/{path.name}")
    return path
