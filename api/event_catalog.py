"""The catalog of outbound events in the OpenAPI document: FastAPI's `webhooks` section
(OpenAPI 3.1), one POST per event type with the body postroom sends, its Standard Webhooks
headers and an example (API.md "Outbound events"; docs/events.md says when each fires).

No `from __future__ import annotations` here: the receivers are made in a loop and FastAPI
reads their annotations at runtime, which must be the objects, not names of locals."""

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header
from pydantic import BaseModel, Field, create_model

from api.schemas.accounts import AccountPublic
from api.schemas.events import EventPublic
from api.schemas.messages import MessagePublic

_EVENT_ID = "8c1f0f9e-2d4b-4c55-9a0e-1b7f5f0b6a21"
_AT = "2026-12-07T10:15:30.123456Z"
_ACCOUNT_ID = "0b8f4a8e-3c1e-4d5e-9a53-2f7f0c3c9a11"
_MESSAGE: dict[str, Any] = {
    "id": "5f9c2a8e-7d1b-4e3a-b6c4-2a9e8d7f1c03",
    "account_id": _ACCOUNT_ID,
    "folder": "INBOX",
    "provider_id": "INBOX:1700000000:4211",
    "message_id_header": "<CAF3x9q@mail.example.org>",
    "thread_id": "d3b07384-d9a0-4c9b-8f6e-3c2a1b0e9f77",
    "from": {"name": "Ana Lima", "email": "ana@example.org"},
    "to": [{"name": None, "email": "team@example.com"}],
    "cc": [],
    "subject": "Quarterly report",
    "date": "2026-12-07T10:15:02Z",
    "snippet": "Hi all, the numbers for Q4 are in...",
    "unread": True,
    "starred": False,
    "has_attachments": True,
    "spam": None,
    "category": None,
    "deleted": False,
    "too_large": False,
}
_CLASSIFIED = {
    **_MESSAGE,
    "spam": {"is_spam": False, "score": 0.04, "indicators": []},
    "category": "primary",
}
_SENT = {
    **_MESSAGE,
    "folder": "Sent",
    "provider_id": "Sent:1700000001:88",
    "from": {"name": None, "email": "team@example.com"},
    "to": [{"name": "Ana Lima", "email": "ana@example.org"}],
    "subject": "Re: Quarterly report",
    "unread": False,
    "has_attachments": False,
}
_SEND = {
    "event_id": "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
    "account_id": _ACCOUNT_ID,
    "message_id_header": "<179668708241.32429.1028375046@example.com>",
}
_ACCOUNT = {
    "id": _ACCOUNT_ID,
    "provider": "imap",
    "email": "team@example.com",
    "status": "active",
    "sync_interval_s": 300,
    "last_sync_at": "2026-12-07T10:15:29.801113Z",
    "created_at": "2026-11-02T08:00:00Z",
}
_JOB = {
    "id": "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
    "source": "api",
    "type": "message.send",
    "external_id": None,
    "status": "dead",
    "attempts": 4,
    "task_ids": ["9b2e61f0-4c1d-4f7a-8e3b-5d6c7a8b9c0d", "a4c3b2d1-e0f9-4a8b-9c7d-6e5f4a3b2c1d"],
    "last_error": "SmtpTemporaryError: The SMTP server answered 451 4.3.0 four times.",
    "received_at": "2026-12-07T10:01:00Z",
    "finished_at": "2026-12-07T10:15:30Z",
    "send_at": None,
    "coalesced_into": None,
}
_REPORT = {
    "kind": "bounce",
    "recipients": [
        {
            "email": "gone@example.net",
            "status": "5.1.1",
            "action": "failed",
            "reason": "unknown_user",
            "hard": True,
            "diagnostic": "550 5.1.1 user unknown",
        }
    ],
    "original_message_id": "<179668708241.32429.1028375046@example.com>",
    "feedback_type": None,
}


class SendInfo(BaseModel):
    event_id: str | None = Field(description="The send job's event (`POST /v1/messages/send`)")
    account_id: str
    message_id_header: str


class SentInfo(SendInfo):
    recipients_sent: int


class SendError(BaseModel):
    code: str = Field(description="The error code, as the job's event shows it")
    smtp_code: int | None = Field(description="The SMTP reply code; its text is never sent")


class FailedSendInfo(SendInfo):
    error: SendError


class MessageData(BaseModel):
    message: MessagePublic


class SentData(BaseModel):
    message: MessagePublic | None
    send: SentInfo


class SendFailedData(BaseModel):
    message: None = Field(description="Always null: nothing was sent, nothing stored")
    send: FailedSendInfo


class ReportData(BaseModel):
    message: MessagePublic
    report: dict[str, Any] = Field(description="The delivery report (API.md 'Delivery reports')")


class AccountData(BaseModel):
    account: AccountPublic


class JobData(BaseModel):
    event: EventPublic


class WebhookTestData(BaseModel):
    endpoint_id: str


class EndpointShown(BaseModel):
    id: str
    url: str
    event_types: list[str] | None
    description: str | None
    status: Literal["active", "disabled"]
    created_at: str


class WebhookDisabledData(BaseModel):
    endpoint: EndpointShown
    reason: Literal["gone", "failing"] = Field(
        description="`gone`: the endpoint answered 410; `failing`: every attempt failed for "
        "POSTROOM_WEBHOOK_DISABLE_AFTER_S"
    )


_ENDPOINT_ID = "3e4f5a6b-7c8d-4e9f-a0b1-c2d3e4f5a6b7"


# type -> (data model, example data, when it fires)
CATALOG: dict[str, tuple[type[BaseModel], dict[str, Any], str]] = {
    "message.created": (
        MessageData,
        {"message": _MESSAGE},
        "A message was stored for the first time: a Nylas notification, an IMAP sync (or its "
        "push), a POP3 sync, or the copy of a message postroom sent.",
    ),
    "message.updated": (
        MessageData,
        {"message": {**_MESSAGE, "unread": False, "starred": True}},
        "A stored message changed in what the list shows: flags read or starred, folder, "
        "a new UIDVALIDITY. A re-fetch that changed nothing sends nothing.",
    ),
    "message.deleted": (
        MessageData,
        {"message": {**_MESSAGE, "deleted": True}},
        "A live message went: deleted at the provider (Nylas notification, IMAP expunge, "
        "gone from the POP3 maildrop) or by `POST /v1/messages/delete`.",
    ),
    "message.classified": (
        MessageData,
        {"message": _CLASSIFIED},
        "A spam verdict and category were stored for a message.",
    ),
    "message.sent": (
        SentData,
        {"message": _SENT, "send": {**_SEND, "recipients_sent": 1}},
        "The SMTP server (or Nylas) accepted a send; once per sent message.",
    ),
    "message.send_failed": (
        SendFailedData,
        {
            "message": None,
            "send": {**_SEND, "error": {"code": "smtp_rejected", "smtp_code": 550}},
        },
        "The server refused a send for good (a 5xx at RCPT or DATA). A send that keeps failing "
        "transiently ends as `job.failed` instead.",
    ),
    "message.bounced": (
        ReportData,
        {"message": _SENT, "report": _REPORT},
        "A bounce (DSN) for a sent message was received (the delivery-report feature).",
    ),
    "message.complained": (
        ReportData,
        {"message": _SENT, "report": {**_REPORT, "kind": "complaint", "feedback_type": "abuse"}},
        "A recipient marked a sent message as spam (an ARF report).",
    ),
    "account.sync_completed": (
        AccountData,
        {"account": _ACCOUNT},
        "A sync of the account finished, all of its parts (`last_sync_at` is the new one).",
    ),
    "account.auth_failed": (
        AccountData,
        {"account": {**_ACCOUNT, "status": "reauth_required"}},
        "The account's credentials or grant stopped working; it needs the user again.",
    ),
    "job.failed": (
        JobData,
        {"event": _JOB},
        "An event (a webhook's work or a job) ran out of retries or failed for good and went "
        "to the dead-letter queue; `data.event` is `GET /v1/events/{id}`.",
    ),
    "webhook.test": (
        WebhookTestData,
        {"endpoint_id": _ENDPOINT_ID},
        "Sent by `POST /v1/webhooks/{id}/test`, to that endpoint only.",
    ),
    "webhook.disabled": (
        WebhookDisabledData,
        {
            "endpoint": {
                "id": _ENDPOINT_ID,
                "url": "https://app.example.com/hooks/postroom",
                "event_types": None,
                "description": "production",
                "status": "disabled",
                "created_at": "2026-12-01T09:30:00+00:00",
            },
            "reason": "failing",
        },
        "An endpoint was disabled (410, or failing for POSTROOM_WEBHOOK_DISABLE_AFTER_S); "
        "sent to the tenant's other endpoints.",
    ),
}


def _envelope_model(kind: str, data: type[BaseModel]) -> type[BaseModel]:
    name = "".join(p.capitalize() for p in kind.replace(".", "_").split("_")) + "Event"
    return create_model(  # type: ignore[call-overload,no-any-return]
        name,
        id=(str, Field(description="The event id; the `webhook-id` header, same on retries")),
        type=(Literal[kind], ...),  # type: ignore[valid-type,arg-type]
        timestamp=(str, Field(description="When the effect committed (UTC)")),
        seq=(int, Field(description="Per tenant: 1, 2, 3... A jump means a missed event")),
        data=(data, ...),
    )


def _receiver(kind: str, model: type[BaseModel], when: str) -> Any:
    async def receive(
        body: model,  # type: ignore[valid-type]
        webhook_id: Annotated[str, Header(alias="webhook-id", description="= body `id`")],
        webhook_timestamp: Annotated[
            str, Header(alias="webhook-timestamp", description="Unix seconds of this attempt")
        ],
        webhook_signature: Annotated[
            str,
            Header(
                alias="webhook-signature",
                description='`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, space '
                "separated when two secrets sign (a rotation)",
            ),
        ],
    ) -> None:
        pass

    receive.__doc__ = when
    receive.__name__ = kind.replace(".", "_")
    return receive


def envelope_models() -> dict[str, type[BaseModel]]:
    """Each type's body as a model (what the catalog documents; tests check real events)."""
    return {kind: _envelope_model(kind, data) for kind, (data, _, _) in CATALOG.items()}


def example_of(kind: str) -> dict[str, Any]:
    """The documented body of one event type."""
    return {"id": _EVENT_ID, "type": kind, "timestamp": _AT, "seq": 42, "data": CATALOG[kind][1]}


def install_event_catalog(app: FastAPI) -> None:
    """One `webhooks` entry per outbound event type (after install_openapi)."""
    models = envelope_models()
    for kind, (_, _, when) in CATALOG.items():
        app.webhooks.add_api_route(
            kind,
            _receiver(kind, models[kind], when),
            methods=["POST"],
            summary=kind,
            tags=["outbound events"],
            responses={200: {"description": "Any 2xx within 15 s: delivered"}},
        )

    # FastAPI writes the document with exclude_none, which strips the examples' nulls (a
    # message's `"spam": null`): put the examples back as they are sent.
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for kind, item in schema.get("webhooks", {}).items():
                content = item["post"]["requestBody"]["content"]["application/json"]
                content["examples"] = {kind: {"summary": kind, "value": example_of(kind)}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
