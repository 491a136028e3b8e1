"""The template renderer over random templates within the size cap: each check and render
finishes under the limits, and the sandbox's own charges stop it (a worker killed by the pool's
wall time, CPU or memory limit means a cost the sandbox did not see: a finding). `make fuzz`
runs it for its share of FUZZ_SECONDS; findings become cases in
tests/hostile/test_template_bombs.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.outbound import templates
from services.outbound.template_pool import Limits, TemplatePool
from services.outbound.templates import Parts, TemplateInvalid, TemplateVariableMissing
from tests.fuzz.conftest import keep_fuzzing

VARIABLES = ("a", "b", "xs", "s", "d")
FILTERS = templates._SAFE_FILTERS
TESTS = templates._SAFE_TESTS
BINOPS = ("+", "-", "*", "/", "//", "%", "**", "~")
COMPARES = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")

numbers = st.integers(-(10**6), 10**6).map(str) | st.sampled_from(
    ["0", "1", "2", "64", "999", "1000000", "10 ** 6", "2.5", "-1"]
)
strings = st.text(alphabet="ab<>&' {}", max_size=6).map(repr)
atoms = numbers | strings | st.sampled_from([*VARIABLES, "true", "none", "loop.index"])


def expressions() -> st.SearchStrategy[str]:
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(BINOPS), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(inner, st.sampled_from(COMPARES), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(inner, st.sampled_from(FILTERS), st.lists(inner, max_size=2)).map(
                lambda t: f"({t[0]}|{t[1]}({', '.join(t[2])}))" if t[2] else f"({t[0]}|{t[1]})"
            ),
            st.tuples(inner, st.sampled_from(TESTS)).map(lambda t: f"({t[0]} is {t[1]})"),
            st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        ),
        max_leaves=12,
    )


def statements() -> st.SearchStrategy[str]:
    expr = expressions()
    simple = st.one_of(
        expr.map(lambda e: "{{ " + e + " }}"),
        st.tuples(st.sampled_from(VARIABLES), expr).map(
            lambda t: "{% set " + t[0] + " = " + t[1] + " %}"
        ),
        st.text(alphabet="ab <>\n", max_size=8),
    )
    return st.recursive(
        simple,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(VARIABLES), expr, st.lists(inner, max_size=3)).map(
                lambda t: "{% for " + t[0] + " in " + t[1] + " %}" + "".join(t[2]) + "{% endfor %}"
            ),
            st.tuples(expr, st.lists(inner, max_size=3)).map(
                lambda t: "{% if " + t[0] + " %}" + "".join(t[1]) + "{% endif %}"
            ),
        ),
        max_leaves=10,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)
variable_sets = st.fixed_dictionaries({}, optional={v: json_values for v in VARIABLES})


@pytest.fixture(scope="module")
def pool() -> Iterator[TemplatePool]:
    made = TemplatePool(Limits(workers=1, wall_s=10.0))
    yield made
    made.close()


def test_random_templates_finish_under_the_limits(pool: TemplatePool) -> None:
    @given(body=st.lists(statements(), min_size=1, max_size=6), variables=variable_sets)
    def check(body: list[str], variables: dict[str, Any]) -> None:
        source = "".join(body)
        parts = Parts(subject="s", text=source, html=source)
        started = time.monotonic()
        for op, given_vars in (("check", {}), ("render", variables)):
            try:
                pool.run_blocking(op, parts, given_vars)
            except (TemplateInvalid, TemplateVariableMissing) as exc:
                # The pool's limits are the backstop; the sandbox's own charges must come first.
                assert "more than 10 s" not in exc.message, (source, variables)
                assert "share of" not in exc.message, (source, variables)
        # Check (a trial render) and render, each stopped by the sandbox at 1 s, and compiling.
        assert time.monotonic() - started < 3 * templates.MAX_RENDER_S + 2, source
        assert pool.replaced == 0, source

    keep_fuzzing(check)
