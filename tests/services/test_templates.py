"""The template sandbox on its own: what templates can do, what they cannot reach, and that
rendering cost stays bounded (through the API: tests/api/test_templates.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.outbound import templates
from services.outbound.templates import Parts, TemplateInvalid, TemplateVariableMissing


def text(source: str, **variables: Any) -> str:
    return templates.render(Parts(subject="s", text=source, html=None), variables).text


def html(source: str, **variables: Any) -> str | None:
    return templates.render(Parts(subject="s", text="", html=source), variables).html


@pytest.mark.parametrize(
    ("source", "variables", "expected"),
    [
        ("Hi {{ user.name }} / {{ user['name'] }}", {"user": {"name": "Ana"}}, "Hi Ana / Ana"),
        (
            "{% for t in tags %}{{ loop.index }}{{ t }}"
            "{% if not loop.last %},{% endif %}{% endfor %}",
            {"tags": ["a", "b"]},
            "1a,2b",
        ),
        (
            "{{ users|join(', ', attribute='name') }}",
            {"users": [{"name": "A"}, {"name": "B"}]},
            "A, B",
        ),
        ("{{ n * 3 }} {{ -n }} {{ n ** 2 }} {{ (n / 4)|round(1) }}", {"n": 2}, "6 -2 4 0.5"),
        ("{{ missing|default('none') }} {% if x is defined %}x{% endif %}", {}, "none "),
        ("{{ s|upper|replace('A', 'o') }} {{ s|length }} {{ s ~ 1 }}", {"s": "aa"}, "oo 2 aa1"),
        ("{% set g = 'Hi ' ~ name %}{{ g|trim }}", {"name": "<b>"}, "Hi <b>"),
        ("{{ xs|sort|first }} {{ xs|max }} {{ xs|sum }}", {"xs": [3, 1, 2]}, "1 3 6"),
    ],
)
def test_what_a_template_can_do(source: str, variables: dict[str, Any], expected: str) -> None:
    assert text(source, **variables) == expected


def test_html_escapes_variables_and_text_does_not() -> None:
    v = {"name": "<script>x & y</script>"}
    assert html("<p>{{ name }}</p>", **v) == "<p>&lt;script&gt;x &amp; y&lt;/script&gt;</p>"
    assert html("{{ '<i>' ~ name }}", **v) == "&lt;i&gt;&lt;script&gt;x &amp; y&lt;/script&gt;"
    assert text("{{ name }}", **v) == v["name"]
    parts = templates.render(Parts(subject="{{ name }}", text="", html=None), v)
    assert parts.subject == v["name"]


def test_a_missing_variable_names_itself() -> None:
    with pytest.raises(TemplateVariableMissing, match="'code' is undefined"):
        text("{{ code }}")
    with pytest.raises(TemplateVariableMissing, match="no attribute 'email'"):
        text("{{ user.email }}", user={"name": "x"})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self }}",
        "{{ range(3) }}",
        "{% include 'x' %}",
        "{% from 'x' import y %}",
        "{{ x|attr('y') }}",
        "{{ x|map('upper') }}",
        "{{ x is callable }}",
        "{{ x._private }}",
        "{{ _x }}",
        "{% for x in xs %}{{ loop._iterator }}{% endfor %}",
    ],
)
def test_escapes_are_refused_when_stored(source: str) -> None:
    with pytest.raises(TemplateInvalid):
        templates.check(Parts(subject="s", text=source, html=None))


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        ("{{ s[k] }}", {"s": "x", "k": "__class__"}),
        ("{{ d[k] }}", {"d": {}, "k": "items"}),
        ("{{ s.upper }}", {"s": "x"}),
        ("{{ d.items }}", {"d": {"a": 1}}),
        ("{{ xs|sort(attribute=k) }}", {"xs": [1, 2], "k": "__class__"}),
        ("{{ xs|join(',', attribute=k) }}", {"xs": ["a"], "k": "__class__"}),
    ],
)
def test_attributes_are_unreachable_at_render(source: str, variables: dict[str, Any]) -> None:
    templates.check(Parts(subject="s", text=source, html=None))
    with pytest.raises((TemplateInvalid, TemplateVariableMissing)):
        text(source, **variables)


def test_globals_are_empty_so_jinja_names_are_just_missing_variables() -> None:
    for name in ("range", "dict", "lipsum", "cycler", "joiner", "namespace", "config"):
        with pytest.raises(TemplateVariableMissing):
            text("{{ " + name + " }}")
    assert text("{{ range }}", range="mine") == "mine"


def best_of(n: int, run: Any) -> float:
    """CPU seconds of this thread (tests/hostile/cost.py: a wall clock measures neighbours)."""
    times = []
    for _ in range(n):
        started = time.thread_time()
        run()
        times.append(time.thread_time() - started)
    return min(times)


def test_render_time_grows_linearly_with_the_variables() -> None:
    source = "{% for u in users %}{{ u.name|upper }} <{{ u.email }}>{% endfor %}"

    def users(n: int) -> list[dict[str, str]]:
        return [{"name": f"user {i}", "email": f"u{i}@example.org"} for i in range(n)]

    # Big enough for timing noise not to dominate, under the output and step limits.
    small, large = users(8_000), users(16_000)
    t1 = best_of(5, lambda: text(source, users=small))
    t2 = best_of(5, lambda: text(source, users=large))
    assert t2 / t1 < 2.5, (t1, t2)


def test_a_template_over_its_step_budget_stops_in_bounded_time() -> None:
    source = "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateInvalid, match="steps"):
        text(source, s="x" * 10_000)
    assert time.monotonic() - started < templates.MAX_RENDER_S + 1
