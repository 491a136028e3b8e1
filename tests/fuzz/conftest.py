"""Hypothesis settings for tests/fuzz: a quick pass in `make test`, a time box in `make fuzz`.

`make fuzz` sets FUZZ_SECONDS (the whole run's budget); each fuzz test then draws fresh
examples until its share of the budget is spent. Without it, each test runs FUZZ_EXAMPLES
(default 50) examples once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS", "0"))
settings.register_profile(
    "postroom-fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),
    deadline=None,  # cost is asserted by tests/hostile; a slow example is not a failure here
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("postroom-fuzz")

_share = [0.0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    fuzz = [i for i in items if "tests/fuzz/" in str(i.path).replace(os.sep, "/")]
    _share[0] = FUZZ_SECONDS / max(1, len(fuzz))


def fuzz_share() -> float:
    """This test's share of FUZZ_SECONDS (0 outside `make fuzz`)."""
    return _share[0]


def keep_fuzzing(test: Callable[[], None]) -> None:
    """Run a @given test once, or again and again until this test's share of FUZZ_SECONDS."""
    stop = time.monotonic() + _share[0]
    test()
    while time.monotonic() < stop:
        test()
