"""Per-tenant and per-class queue depth and wait metrics, and the Grafana dashboard's queries
checked against the metric names /metrics actually exposes (issue 12 item 6)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from api.routes.metrics import class_of
from services import metrics
from tests.api.test_health_metrics import sample, scrape
from tests.factories import create_nylas_account
from tests.helpers import notification, post_webhook

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "postroom.json"

# PromQL words that look like metric names but are functions, keywords or label names.
_NOT_METRICS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "increase",
    "irate",
    "topk",
    "bottomk",
    "by",
    "without",
    "on",
    "ignoring",
    "histogram_quantile",
    "le",
}


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape can carry, from the # TYPE lines (a histogram expands to the
    names its samples have; a counter's TYPE line already names it with `_total`)."""
    names: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = m.groups()
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            names.add(name)
    return names


def query_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers outside {...} and [...], not functions."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", bare))
    return {w for w in words if w not in _NOT_METRICS and not w.isdigit()}


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


async def test_every_dashboard_query_reads_metrics_that_exist(unserved_client) -> None:
    # One webhook, so the scrape-time gauges have something to show.
    await post_webhook(unserved_client, notification("message.created", {"id": "d1"}))
    names = exposed_names(await scrape(unserved_client))
    queries = dashboard_queries()
    assert len(queries) >= 10
    used: set[str] = set()
    for expr in queries:
        found = query_names(expr)
        assert found, expr
        missing = found - names
        assert not missing, f"{expr!r} reads {sorted(missing)}, not among /metrics' names"
        used |= found
    # The figures are on the board: queue depth and wait, per class and per tenant.
    for name in (
        "postroom_class_queue_depth",
        "postroom_task_wait_seconds_bucket",
        "postroom_tenant_queue_depth",
        "postroom_tenant_oldest_wait_seconds",
        "postroom_class_oldest_wait_seconds",
    ):
        assert name in used, name


def test_the_name_check_would_see_a_misspelt_metric() -> None:
    names = {"postroom_queue_depth", "postroom_task_wait_seconds_bucket"}
    expr = (
        "histogram_quantile(0.99, sum by (le, class) (rate(postroom_task_wait_second_bucket[5m])))"
    )
    assert query_names(expr) - names == {"postroom_task_wait_second_bucket"}
    assert query_names('postroom_queue_depth{queue="short.1"}') == {"postroom_queue_depth"}


async def test_tenant_depth_and_wait_by_class_at_scrape_time(
    unserved_client, db, empty_database
) -> None:
    a = await create_nylas_account(db)
    b = await create_nylas_account(db)
    posts = [(f"a{i}", a.grant_id) for i in range(3)] + [("b", b.grant_id), ("x", "nobody")]
    for mid, grant in posts:
        r = await post_webhook(
            unserved_client, notification("message.created", {"id": mid, "grant_id": grant})
        )
        assert r.status_code == 200, r.text
    text = await scrape(unserved_client)
    depth = "postroom_tenant_queue_depth"
    assert sample(text, depth, tenant=str(a.tenant_id), **{"class": "short"}) == 3
    assert sample(text, depth, tenant=str(b.tenant_id), **{"class": "short"}) == 1
    assert sample(text, depth, tenant="unknown", **{"class": "short"}) == 1
    assert sample(text, depth, tenant=str(a.tenant_id), **{"class": "bulk"}) == 0
    wait = "postroom_tenant_oldest_wait_seconds"
    assert 0 < sample(text, wait, tenant=str(a.tenant_id), **{"class": "short"}) < 60
    assert re.search(r'^postroom_class_oldest_wait_seconds\{class="short"\} ', text, re.M)


def test_only_the_deepest_tenants_keep_their_label() -> None:
    rows: list[tuple[str, str, int, float]] = [
        (f"t{i:02d}", "postroom.events.process", i + 1, float(i)) for i in range(30)
    ]
    rows += [
        ("t29", "postroom.mail.sync_account", 5, 100.0),
        ("", "postroom.events.process", 2, 7.0),
    ]
    out = metrics.top_tenants(rows, top=3, class_of=class_of)
    tenants = {t for t, _ in out}
    assert tenants == {"t29", "t28", "t27", "other", "unknown"}
    assert out[("t29", "short")] == (30, 29.0)
    assert out[("t29", "bulk")] == (5, 100.0)
    # Everyone else summed, the oldest wait kept.
    assert out[("other", "short")] == (sum(range(1, 28)), 26.0)
    assert out[("unknown", "short")] == (2, 7.0)


def test_dashboard_is_valid_grafana_json() -> None:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert p["datasource"]["type"] == "prometheus"
        assert all(t["refId"] and t["expr"] for t in p["targets"])
