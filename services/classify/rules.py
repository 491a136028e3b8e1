"""Per-account rules: when a classified message matches a condition, move or label it.

Conditions (all keys must match): `is_spam` (bool), `category`, `from_domain` (the sender's
domain or a parent of it). Actions: `{"type": "move", "folder_role": "junk"}`,
`{"type": "move", "folder": "<name>"}`, `{"type": "label", "label": "<text>"}`.
Applying is idempotent: a message already in the target folder or carrying the label is
left alone, so a retried or replayed step does nothing twice.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, Folder, Message, Provider, Rule
from database.repositories import classifier as classify_repo
from database.repositories import rules as repo
from database.repositories.messages import rows as messages_repo
from services import cursors
from services.accounts import access as mail_accounts
from services.errors import NotFound, PermissionDenied, ValidationFailed
from services.imap.client import ImapClient
from services.imap.rows import provider_id
from services.imap.slots import imap_slot
from settings import Settings

CONDITION_KEYS = {"is_spam", "category", "from_domain"}
CATEGORIES = {"primary", "promotions", "social", "updates", "forums"}


class FolderMover(Protocol):
    async def update_message_folders(
        self, grant_id: str, message_id: str, folders: list[str]
    ) -> dict[str, Any]: ...


# Bounds on every string a rule holds: every rule of an account is read for each new message,
# so a rule is a few hundred bytes at most, never a place to store data.
MAX_DOMAIN_CHARS = 253
MAX_FOLDER_CHARS = 500
MAX_LABEL_CHARS = 100
_DOMAIN = re.compile(r"^@?[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_ROLE = re.compile(r"^[a-z_]{1,32}$")
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")
ACTION_KEYS = {"move": ({"type", "folder_role"}, {"type", "folder"}), "label": ({"type", "label"},)}


def _bounded_text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and bool(_PRINTABLE.match(value))


def validate(condition: dict[str, Any], action: dict[str, Any]) -> None:
    """Reject a rule that could never match or act, or that holds anything but its fields,
    with a sentence saying why."""
    if not isinstance(condition, dict) or not condition or set(condition) - CONDITION_KEYS:
        raise ValidationFailed(f"condition needs one or more of {sorted(CONDITION_KEYS)}.")
    if "is_spam" in condition and not isinstance(condition["is_spam"], bool):
        raise ValidationFailed("condition.is_spam must be true or false.")
    category = condition.get("category")
    if "category" in condition and not (isinstance(category, str) and category in CATEGORIES):
        raise ValidationFailed(f"condition.category must be one of {sorted(CATEGORIES)}.")
    domain = condition.get("from_domain")
    if "from_domain" in condition and not (
        isinstance(domain, str) and len(domain) <= MAX_DOMAIN_CHARS + 1 and _DOMAIN.match(domain)
    ):
        raise ValidationFailed("condition.from_domain must be a domain name.")
    kind = action.get("type") if isinstance(action, dict) else None
    if kind not in ACTION_KEYS:
        raise ValidationFailed("action.type must be 'move' or 'label'.")
    if set(action) not in [set(keys) for keys in ACTION_KEYS[kind]]:
        shapes = " or ".join(str(sorted(keys)) for keys in ACTION_KEYS[kind])
        raise ValidationFailed(f"a {kind} action has exactly the keys {shapes}.")
    if "folder_role" in action and not (
        isinstance(action["folder_role"], str) and _ROLE.match(action["folder_role"])
    ):
        raise ValidationFailed("a move action's folder_role is a role such as 'junk'.")
    if "folder" in action and not _bounded_text(action["folder"], MAX_FOLDER_CHARS):
        raise ValidationFailed(
            f"a move action's folder is a name of 1-{MAX_FOLDER_CHARS} printable characters."
        )
    if kind == "label" and not _bounded_text(action["label"], MAX_LABEL_CHARS):
        raise ValidationFailed(
            f"a label action's label is 1-{MAX_LABEL_CHARS} printable characters."
        )


def matches(condition: dict[str, Any], message: Message) -> bool:
    if "is_spam" in condition and bool(message.is_spam) != condition["is_spam"]:
        return False
    if "category" in condition and message.category != condition["category"]:
        return False
    if "from_domain" in condition:
        domain = (message.from_email or "").rsplit("@", 1)[-1].lower()
        wanted = str(condition["from_domain"]).lower().lstrip("@")
        if domain != wanted and not domain.endswith("." + wanted):
            return False
    return True


async def _target(session: AsyncSession, account: Account, action: dict[str, Any]) -> Folder:
    if action.get("folder_role"):
        folder = await messages_repo.folder_by_role(
            session, tenant_id=account.tenant_id, account_id=account.id, role=action["folder_role"]
        )
    else:
        folder = await classify_repo.folder_by_name(
            session, tenant_id=account.tenant_id, account_id=account.id, name=action["folder"]
        )
    if folder is None:
        wanted = action.get("folder_role") or action.get("folder")
        raise ValidationFailed(f"The account has no folder {wanted!r} to move messages to.")
    return folder


async def imap_move(
    config: Any, *, source: str, uid: int, target: str
) -> tuple[int, dict[int, int]] | None:
    """UID MOVE one message over the mail-ops IMAP client (their client has no account-level
    move helper; this is the smallest one)."""
    async with ImapClient(config) as client:
        await client.select(source)
        if client.has("MOVE"):
            return await client.uid_move(str(uid), target)
        # RFC 3501 alone: COPY, then flag and expunge the original (UIDPLUS for one UID).
        copied = await client.uid_copy(str(uid), target)
        await client.uid_store(str(uid), "+FLAGS.SILENT (\\Deleted)")
        await client.uid_expunge(str(uid))
        return copied


def _new_uid(moved: tuple[int, dict[int, int]] | None, uid: int, target: Folder) -> dict[str, Any]:
    """The moved message's UID in its new folder (UIDPLUS COPYUID). Without one the old UID is
    dropped, never kept: in the target folder it may name another message, and a delete by it
    would remove that one. The target's next sync finds the message again."""
    if moved is None or uid not in moved[1]:
        return {"imap_uid": None}
    uidvalidity, new = moved[0], moved[1][uid]
    return {
        "imap_uid": new,
        "uidvalidity": uidvalidity,
        "provider_id": provider_id(target.name, uidvalidity, new),
    }


async def move_message(
    db: Database,
    *,
    settings: Settings,
    nylas: FolderMover | None,
    account: Account,
    message: Message,
    target: Folder,
) -> bool:
    """Move one message at the provider, then record it; False when it is there already.

    Owns its transactions: the IMAP source folder and credential are read and committed
    before the server is talked to; the new place is recorded in a short one after it.
    """
    if message.folder_id == target.id:
        return False
    place: dict[str, Any] = {"folder_id": target.id}
    if account.provider == Provider.pop3:
        raise ValidationFailed("A POP3 account has one folder, INBOX: its messages cannot move.")
    if account.provider == Provider.nylas:
        if nylas is None or not account.grant_id:
            raise ValidationFailed("Nylas is not configured; the message cannot be moved.")
        await nylas.update_message_folders(
            account.grant_id, message.provider_id, [target.provider_id or target.name]
        )
    else:
        async with db.transaction() as s:
            source = await classify_repo.folder_by_id(s, message.folder_id)
            if source is None or message.imap_uid is None:
                raise ValidationFailed(
                    "The message has no IMAP folder and UID; it cannot be moved."
                )
            config = await mail_accounts.imap_config(s, settings, account)
        async with imap_slot(settings, account.id):
            moved = await imap_move(
                config,
                source=source.provider_id or source.name,
                uid=message.imap_uid,
                target=target.provider_id or target.name,
            )
        place.update(_new_uid(moved, message.imap_uid, target))
    async with db.transaction() as s:
        await classify_repo.set_message_place(s, message_id=message.id, values=place)
    return True


async def apply_label(session: AsyncSession, *, message: Message, label: str) -> str | None:
    """The one local action, as a step of the caller's transaction (also the inline run's,
    services.classify.inline); None when the message has the label already."""
    if label in (message.labels or []):
        return None
    message.labels = [*(message.labels or []), label]
    await classify_repo.set_message_place(
        session, message_id=message.id, values={"labels": message.labels}
    )
    return f"label:{label}"


async def apply_action(
    db: Database,
    *,
    settings: Settings,
    nylas: FolderMover | None,
    account: Account,
    message: Message,
    action: dict[str, Any],
) -> str | None:
    """Do one action; a short description of what changed, or None when nothing did.

    Each action commits on its own; applying is idempotent, so a retry after a later action
    failed finds the earlier ones done and leaves them.
    """
    if action["type"] == "label":
        async with db.transaction() as s:
            return await apply_label(s, message=message, label=action["label"])
    async with db.transaction() as s:
        target = await _target(s, account, action)
    moved = await move_message(
        db, settings=settings, nylas=nylas, account=account, message=message, target=target
    )
    if moved:
        message.folder_id = target.id
    return f"move:{target.name}" if moved else None


async def apply_rules(
    db: Database,
    *,
    settings: Settings,
    nylas: FolderMover | None,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    only: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Apply the account's enabled rules (or the given ad-hoc ones) to one message.

    Owns its transactions (a move talks to the mail server with none open).
    """
    async with db.transaction() as s:
        message = await classify_repo.get_message(s, tenant_id=tenant_id, message_id=message_id)
        if message is None:
            raise PermissionDenied(f"Message {message_id} was not found for this tenant.")
        account = await mail_accounts.account_for_tenant(
            s, tenant_id=tenant_id, account_id=message.account_id
        )
        rules: list[Any] = (
            only
            if only is not None
            else await repo.enabled_terms(s, tenant_id=tenant_id, account_id=account.id)
        )
    applied, matched = [], []
    for rule in rules:
        condition = rule["condition"] if isinstance(rule, dict) else rule.condition
        action = rule["action"] if isinstance(rule, dict) else rule.action
        if not matches(condition, message):
            continue
        matched.append(str(rule.get("name")) if isinstance(rule, dict) else str(rule.id))
        done = await apply_action(
            db, settings=settings, nylas=nylas, account=account, message=message, action=action
        )
        if done:
            applied.append(done)
    return {
        "status": "success",
        "message_id": str(message_id),
        "matched": matched,
        "applied": applied,
    }


JUNK_RULE = {
    "name": "move spam to junk",
    "condition": {"is_spam": True},
    "action": {"type": "move", "folder_role": "junk"},
}


async def get_rule(
    session: AsyncSession, *, tenant_id: uuid.UUID, account_id: uuid.UUID, rule_id: uuid.UUID
) -> Rule:
    rule = await repo.get(session, tenant_id=tenant_id, account_id=account_id, rule_id=rule_id)
    if rule is None:
        raise NotFound("No such rule.")
    return rule


async def list_page(
    session: AsyncSession,
    *,
    settings: Settings,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> tuple[list[Rule], str | None]:
    """A page of the account's rules in the order they apply, and the cursor of the next."""
    key = cursors.signing_key(settings)
    scope = {"kind": "rules", "tenant": str(tenant_id), "account": str(account_id)}
    after = cursors.decode_ranked(key, scope, cursor) if cursor else None
    found = await repo.list_page(
        session, tenant_id=tenant_id, account_id=account_id, after=after, limit=limit + 1
    )
    page, more = found[:limit], len(found) > limit
    last = page[-1] if page else None
    next_cursor = (
        cursors.encode_ranked(key, scope, last.position, last.created_at, last.id)
        if more and last is not None
        else None
    )
    return page, next_cursor
