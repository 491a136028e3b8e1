"""verdicts() (a batch of webhooks, services/nylas/batch.py) gives each mail exactly what verdict()
gives it alone, with the tenant's model looked up once for the batch: on real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from database.models import Message
from services.classify import mail, tenant
from services.classify.service import record_feedback, verdict, verdicts
from tests.factories import create_nylas_account

PHRASE = "zorblax quantum vortex token presale"


async def _teach(db: Any, account: Any, text: str, label: str) -> None:
    async with db.transaction() as s:
        msg = Message(
            tenant_id=account.tenant_id,
            account_id=account.id,
            provider_id=f"m-{uuid.uuid4().hex[:8]}",
            subject="hello",
            text=text,
            from_email="friend@example.org",
            sort_at=datetime.now(UTC),
        )
        s.add(msg)
    async with db.transaction() as s:
        await record_feedback(
            s, tenant_id=account.tenant_id, user_id=None, message_id=msg.id, label=label
        )
    # What the refit task does once the label committed (verdicts only read the model).
    await tenant.refit_when_due(db, tenant_id=account.tenant_id)


DOCS = [
    mail.MailDoc(subject="hello", from_email="friend@example.org", text=f"Heard of the {PHRASE}?"),
    mail.MailDoc(subject="lunch", from_email="friend@example.org", text="Lunch on friday?"),
    mail.MailDoc(
        subject="minutes",
        from_email="boss@example.com",
        text=f"The review moves to Thursday; ignore the {PHRASE.split()[0]} thread.",
    ),
    mail.MailDoc(subject="", from_email="", text=""),
]


async def test_a_batch_gets_the_verdicts_each_mail_gets_alone(db: Any) -> None:
    teacher, other = await create_nylas_account(db), await create_nylas_account(db)
    spam = ("Join the %s today.", "Last seats: %s for members.", "%s opens tomorrow.")
    ham = ("Lunch on friday at the usual place, see you there", "The minutes are attached.")
    for i in range(10):
        await _teach(db, teacher, f"{spam[i % 3] % PHRASE} ({i})", "spam")
        await _teach(db, teacher, f"{ham[i % 2]} ({i})", "ham")
    for account in (teacher, other):
        async with db.transaction() as s:
            alone = [await verdict(s, tenant_id=account.tenant_id, doc=d) for d in DOCS]
            together = await verdicts(s, tenant_id=account.tenant_id, docs=DOCS)
        assert together == alone
    # The teaching shows, so the comparison above covers a fitted tenant model, not only none.
    async with db.transaction() as s:
        taught = await verdicts(s, tenant_id=teacher.tenant_id, docs=DOCS[:1])
        untaught = await verdicts(s, tenant_id=other.tenant_id, docs=DOCS[:1])
    assert taught[0]["spam_score"] > untaught[0]["spam_score"] + 0.1, (taught, untaught)
