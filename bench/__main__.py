"""`python -m bench [name ...]`: run every bench module (or the named ones) in turn."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str]) -> int:
    names = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_")
    )
    chosen = argv or names
    unknown = set(chosen) - set(names)
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(sorted(unknown))}; have {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        start = time.monotonic()
        importlib.import_module(f"bench.bench_{name}").main()
        print(f"({name} took {time.monotonic() - start:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
