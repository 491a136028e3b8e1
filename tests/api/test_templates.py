"""Templates through the API (CRUD, tenants, validation at PUT, rendering at send time) and
the request side of scheduled sends. The sends' delivery is in tests/worker/test_scheduled_send.py
and test_template_send.py, through the real worker and aiosmtpd."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from database.models import Event, SendDraft
from tests.api.keys import make_account, make_caller
from tests.api.test_jobs import published, task_ids
from tests.peers import RedisServer

WELCOME = {
    "subject": "Welcome, {{ name }}",
    "text": "Hi {{ name }},\ncode {{ code }}.",
    "html": "<p>Hi {{ name }}, code <b>{{ code }}</b></p>",
}


@pytest.fixture(scope="module")
def quiet_broker():
    """A Redis no worker consumes: what a request published can be read back."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def app(settings, quiet_broker):
    from api.app import create_app

    application = create_app(settings.model_copy(update={"redis_url": quiet_broker.url}))
    async with application.router.lifespan_context(application):
        yield application


async def _events(db, tenant_id) -> list[Event]:
    query = sa.select(Event).where(Event.tenant_id == tenant_id)
    async with db.sessionmaker() as s:
        return list((await s.execute(query)).scalars())


def _send(account: uuid.UUID, **extra) -> dict:
    return {"account_id": str(account), "to": [{"email": "bo@example.org"}], **extra}


async def test_put_creates_then_replaces_and_get_list_delete(client, db) -> None:
    caller = await make_caller(db)
    h = caller.headers
    r = await client.put("/v1/templates/welcome.v1", json=WELCOME, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "welcome.v1" and r.json()["html"] == WELCOME["html"]
    r = await client.put("/v1/templates/welcome.v1", json={**WELCOME, "html": None}, headers=h)
    assert r.status_code == 200 and r.json()["html"] is None
    assert (await client.get("/v1/templates/welcome.v1", headers=h)).json()["html"] is None
    await client.put("/v1/templates/reset_pw", json=WELCOME, headers=h)

    page = (await client.get("/v1/templates?limit=1", headers=h)).json()
    assert [t["name"] for t in page["data"]] == ["reset_pw"] and page["next_cursor"]
    rest = await client.get(f"/v1/templates?limit=1&cursor={page['next_cursor']}", headers=h)
    assert [t["name"] for t in rest.json()["data"]] == ["welcome.v1"]
    assert rest.json()["next_cursor"] is None

    assert (await client.delete("/v1/templates/welcome.v1", headers=h)).status_code == 204
    assert (await client.get("/v1/templates/welcome.v1", headers=h)).status_code == 404
    assert (await client.delete("/v1/templates/welcome.v1", headers=h)).status_code == 404


async def test_templates_belong_to_their_tenant(client, db) -> None:
    owner, other = await make_caller(db), await make_caller(db)
    assert (
        await client.put("/v1/templates/t", json=WELCOME, headers=owner.headers)
    ).status_code == 201
    for method in ("get", "delete"):
        r = await client.request(method.upper(), "/v1/templates/t", headers=other.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await client.get("/v1/templates", headers=other.headers)).json()["data"] == []
    # The same name in another tenant is another template; the owner's stays as it was.
    mine = {**WELCOME, "subject": "Other"}
    assert (
        await client.put("/v1/templates/t", json=mine, headers=other.headers)
    ).status_code == 201
    got = (await client.get("/v1/templates/t", headers=owner.headers)).json()
    assert got["subject"] == WELCOME["subject"]
    # Nor can a send of the other tenant use it by name.
    account = await make_account(db, other)
    await client.delete("/v1/templates/t", headers=other.headers)
    r = await client.post(
        "/v1/messages/send",
        json=_send(account, template="t", variables={"name": "x", "code": 1}),
        headers=other.headers,
    )
    assert r.status_code == 404


@pytest.mark.parametrize("name", ["has space", "x" * 101, "semi;colon", "ümlaut", "a+b", "a:b"])
async def test_bad_names_are_422(client, db, name) -> None:
    caller = await make_caller(db)
    r = await client.put(f"/v1/templates/{name}", json=WELCOME, headers=caller.headers)
    assert r.status_code == 422, (name, r.text)


async def test_size_caps_and_syntax_errors_are_422_with_a_sentence(client, db) -> None:
    caller = await make_caller(db)
    big = {**WELCOME, "text": "x" * (256 * 1024 + 1)}
    assert (
        await client.put("/v1/templates/big", json=big, headers=caller.headers)
    ).status_code == 422
    r = await client.put(
        "/v1/templates/bad", json={**WELCOME, "html": "<p>{% if x %}open"}, headers=caller.headers
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "template_invalid"
    assert err["message"].startswith("The html template has a syntax error (line 1)")
    assert "Traceback" not in r.text and "File " not in r.text
    assert (await client.get("/v1/templates/bad", headers=caller.headers)).status_code == 404


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{% include 'x' %}",
    "{% import 'x' as y %}{{ y }}",
    "{% extends 'base' %}",
    "{{ range(10) }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{{ lipsum() }}",
    "{{ name.upper() }}",
    "{{ name|attr('__class__') }}",
    "{{ name|safe }}",
    "{{ name['__class__'] }}",
    "{% macro m() %}{{ caller() }}{% endmacro %}",
    "{% autoescape false %}{{ name }}{% endautoescape %}",
]


@pytest.mark.parametrize("source", ESCAPES)
async def test_escape_attempts_are_refused_at_put(client, db, source) -> None:
    caller = await make_caller(db)
    r = await client.put(
        "/v1/templates/evil", json={**WELCOME, "text": source}, headers=caller.headers
    )
    assert r.status_code == 422, (source, r.text)
    assert r.json()["error"]["code"] == "template_invalid"
    assert r.json()["error"]["message"].endswith(".")


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        # Names Jinja2 would fill in by default: here there are no globals, only variables.
        ("{{ config }}", {}),
        ("{{ cycler }}{{ joiner }}{{ namespace }}{{ dict }}", {}),
        # An attribute reached through a key the request supplies (no static check can see it).
        ("{{ name[key] }}", {"name": "x", "key": "__class__"}),
        ("{{ user[key][key2] }}", {"user": {}, "key": "__init__", "key2": "__globals__"}),
    ],
)
async def test_escape_attempts_at_send_time_render_nothing(client, db, source, variables) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    r = await client.put(
        "/v1/templates/sly", json={**WELCOME, "text": source}, headers=caller.headers
    )
    assert r.status_code == 201
    variables = {"name": "Ana", "code": 7, **variables}
    r = await client.post(
        "/v1/messages/send",
        json=_send(account, template="sly", variables=variables),
        headers=caller.headers,
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("template_invalid", "template_variable_missing")
    assert "class" not in r.json()["error"]["message"].replace("__class__", "")
    assert await _events(db, caller.tenant_id) == []


async def test_send_with_template_renders_into_the_draft(client, db, quiet_broker) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    await client.put("/v1/templates/welcome", json=WELCOME, headers=caller.headers)
    variables = {"name": "<Ana & Bo>", "code": 42}
    r = await client.post(
        "/v1/messages/send",
        json=_send(account, template="welcome", variables=variables),
        headers=caller.headers,
    )
    assert r.status_code == 202, r.text
    async with db.sessionmaker() as s:
        draft = await s.get(SendDraft, uuid.UUID(r.json()["event_id"]))
    assert draft.subject == "Welcome, <Ana & Bo>"
    assert draft.text == "Hi <Ana & Bo>,\ncode 42."
    assert draft.html == "<p>Hi &lt;Ana &amp; Bo&gt;, code <b>42</b></p>"
    [event] = await _events(db, caller.tenant_id)
    # Ids only in what travels: neither the template's output nor the variables.
    assert "Ana" not in str(event.task_kwargs) and "Ana" not in str(event.payload)
    assert r.json()["task_id"] in task_ids(await published(quiet_broker.url, "short."))


async def test_template_send_errors_are_422_at_request_time(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    h = caller.headers
    await client.put("/v1/templates/welcome", json=WELCOME, headers=h)
    missing = await client.post(
        "/v1/messages/send",
        json=_send(account, template="welcome", variables={"name": "x"}),
        headers=h,
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "template_variable_missing"
    assert "'code' is undefined" in missing.json()["error"]["message"]
    both = await client.post(
        "/v1/messages/send",
        json=_send(account, template="welcome", variables={}, subject="Hi"),
        headers=h,
    )
    assert both.status_code == 422 and "either" in both.json()["error"]["message"]
    loose = await client.post(
        "/v1/messages/send", json=_send(account, variables={"a": 1}, subject="Hi"), headers=h
    )
    assert loose.status_code == 422
    unknown = await client.post(
        "/v1/messages/send", json=_send(account, template="nope", variables={}), headers=h
    )
    assert unknown.status_code == 404
    # A variable that would break the Subject header into two lines.
    header = await client.post(
        "/v1/messages/send",
        json=_send(account, template="welcome", variables={"name": "x\r\nBcc: a@b.c", "code": 1}),
        headers=h,
    )
    assert header.status_code == 422 and "line break" in header.json()["error"]["message"]
    assert await _events(db, caller.tenant_id) == []


@pytest.mark.parametrize(
    ("source", "variables"),
    [
        (
            "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}",
            {"s": "x" * 2000},
        ),
        ("{% set t = s %}" + "{% set t = t ~ t %}" * 40 + "{{ t|length }}", {"s": "ab"}),
        ("{{ s * 1000000000 }}", {"s": "ab"}),
        ("{{ 9 ** 999999999 }}", {}),
        ("{{ s|replace('', s) }}", {"s": "x" * 5000}),
        ("{% for a in s %}{{ s }}{% endfor %}", {"s": "x" * 5000}),
        ("{% set a = [s, s] %}{% set b = [a, a] %}{% set c = [b, b] %}{{ c == c }}", {"s": "x"}),
    ],
)
async def test_rendering_cost_is_bounded(client, db, source, variables) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    r = await client.put(
        "/v1/templates/bomb", json={**WELCOME, "text": source}, headers=caller.headers
    )
    if r.status_code == 422:
        # Needing no variable, it went over a limit in the trial render when stored.
        assert "cannot be rendered" in r.json()["error"]["message"], r.text
        return
    assert r.status_code == 201, r.text
    started = time.monotonic()
    r = await client.post(
        "/v1/messages/send",
        json=_send(account, template="bomb", variables={"name": "n", "code": 1, **variables}),
        headers=caller.headers,
    )
    assert time.monotonic() - started < 3
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_invalid", r.text
    assert "cannot be rendered" in r.json()["error"]["message"]


async def test_scheduled_send_is_accepted_and_waits_unpublished(client, db, quiet_broker) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    body = _send(account, subject="Later", text="t", send_at=at.isoformat())
    headers = {**caller.headers, "Idempotency-Key": "later-1"}
    r = await client.post("/v1/messages/send", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    event = (await client.get(f"/v1/events/{job['event_id']}", headers=caller.headers)).json()
    assert event["status"] == "scheduled"
    assert datetime.fromisoformat(event["send_at"]) == at
    listed = await client.get("/v1/events?status=scheduled", headers=caller.headers)
    assert [e["id"] for e in listed.json()["data"]] == [job["event_id"]]
    task = (await client.get(f"/v1/tasks/{job['task_id']}", headers=caller.headers)).json()
    assert task["state"] == "PENDING"
    assert job["task_id"] not in task_ids(await published(quiet_broker.url, "short."))
    # The same key and body: the same job, still one event.
    again = await client.post("/v1/messages/send", json=body, headers=headers)
    assert again.status_code == 202 and again.json() == job
    assert len(await _events(db, caller.tenant_id)) == 1
    # An unscheduled event has no send_at.
    now = await client.post(
        "/v1/messages/send", json=_send(account, subject="Now"), headers=caller.headers
    )
    plain = await client.get(f"/v1/events/{now.json()['event_id']}", headers=caller.headers)
    assert plain.json()["status"] != "scheduled" and plain.json()["send_at"] is None


async def test_send_at_bounds(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    now = datetime.now(UTC)

    async def send(at: str) -> tuple[int, dict]:
        r = await client.post(
            "/v1/messages/send",
            json=_send(account, subject="x", send_at=at),
            headers=caller.headers,
        )
        return r.status_code, r.json()

    status, body = await send((now + timedelta(days=30, minutes=5)).isoformat())
    assert status == 422 and "30 days" in body["error"]["message"]
    status, body = await send((now - timedelta(minutes=5)).isoformat())
    assert status == 422 and "past" in body["error"]["message"]
    status, _ = await send((now + timedelta(days=2)).replace(tzinfo=None).isoformat())
    assert status == 422, "a time without a zone is ambiguous"
    assert (await send("tomorrow"))[0] == 422
    # Just now (a slow clock or request): sent at once, not scheduled.
    status, body = await send((now - timedelta(seconds=20)).isoformat())
    assert status == 202
    event = (await client.get(f"/v1/events/{body['event_id']}", headers=caller.headers)).json()
    assert event["status"] == "received" and event["send_at"] is None
    # Another zone is the same instant.
    at = (now + timedelta(days=29)).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    status, body = await send(at.isoformat())
    assert status == 202
    event = (await client.get(f"/v1/events/{body['event_id']}", headers=caller.headers)).json()
    assert datetime.fromisoformat(event["send_at"]) == at


async def test_a_repeated_key_gets_its_job_back_after_the_template_changed(client, db) -> None:
    caller = await make_caller(db)
    account = await make_account(db, caller)
    h = {**caller.headers, "Idempotency-Key": "welcome-ana"}
    await client.put("/v1/templates/welcome", json=WELCOME, headers=caller.headers)
    body = _send(account, template="welcome", variables={"name": "Ana", "code": 1})
    first = await client.post("/v1/messages/send", json=body, headers=h)
    assert first.status_code == 202
    await client.delete("/v1/templates/welcome", headers=caller.headers)
    again = await client.post("/v1/messages/send", json=body, headers=h)
    assert again.status_code == 202 and again.json() == first.json()
    # The draft holds what was rendered for the first request.
    async with db.sessionmaker() as s:
        draft = await s.get(SendDraft, uuid.UUID(first.json()["event_id"]))
    assert draft.subject == "Welcome, Ana"
    other = {**body, "variables": {"name": "Bo", "code": 1}}
    assert (await client.post("/v1/messages/send", json=other, headers=h)).status_code == 409
