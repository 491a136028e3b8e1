"""Feedback to the tenant's classifier, and per-account rules (API.md "Messages", rules)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt

from api.auth import PrincipalDep
from api.deps import SettingsDep, UowDep
from api.schemas.common import Strict, error_responses
from api.schemas.messages import Feedback
from database.models import Rule
from database.repositories import rules as rules_repo
from services.accounts.admin import get_account
from services.accounts.quotas import ensure_rule_room
from services.classify import rules
from services.classify.service import record_feedback, refit_job

router = APIRouter(prefix="/v1", responses=error_responses(401, 404, 422))


class RuleCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    condition: dict[str, Any] = Field(examples=[{"is_spam": True}])
    action: dict[str, Any] = Field(examples=[{"type": "move", "folder_role": "junk"}])
    position: StrictInt = Field(default=0, ge=0, le=10_000)
    enabled: StrictBool = True


class RuleUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    condition: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    position: StrictInt | None = Field(default=None, ge=0, le=10_000)
    enabled: StrictBool | None = None


class RulePublic(BaseModel):
    id: str
    account_id: str
    name: str
    condition: dict[str, Any]
    action: dict[str, Any]
    position: int
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RuleList(BaseModel):
    data: list[RulePublic]
    next_cursor: str | None = None


def rule_public(r: Rule) -> RulePublic:
    return RulePublic(
        id=str(r.id),
        account_id=str(r.account_id),
        name=r.name,
        condition=r.condition,
        action=r.action,
        position=r.position,
        enabled=r.enabled,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


@router.post("/messages/{message_id}/feedback", status_code=204, tags=["messages"])
async def message_feedback(
    message_id: uuid.UUID,
    body: Annotated[Feedback, Body()],
    principal: PrincipalDep,
    uow: UowDep,
) -> Response:
    """Teach this tenant's classifier that the message is spam or ham (its verdicts only)."""
    changed = await record_feedback(
        uow.session,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        message_id=message_id,
        label=body.label,
    )
    if changed:  # the refit runs as a task of its own once the label committed
        uow.publish_after_commit(refit_job(principal.tenant_id))
    await uow.commit()
    return Response(status_code=204)


@router.get(
    "/accounts/{account_id}/rules",
    response_model=RuleList,
    tags=["rules"],
    responses=error_responses(400),
)
async def list_rules(
    account_id: uuid.UUID,
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> RuleList:
    """The account's rules in the order they apply, a page at a time."""
    await get_account(uow.session, principal.tenant_id, account_id)
    found, next_cursor = await rules.list_page(
        uow.session,
        settings=settings,
        tenant_id=principal.tenant_id,
        account_id=account_id,
        limit=limit,
        cursor=cursor,
    )
    return RuleList(data=[rule_public(r) for r in found], next_cursor=next_cursor)


@router.post(
    "/accounts/{account_id}/rules", status_code=201, response_model=RulePublic, tags=["rules"]
)
async def create_rule(
    account_id: uuid.UUID,
    body: Annotated[RuleCreate, Body()],
    principal: PrincipalDep,
    uow: UowDep,
    settings: SettingsDep,
) -> RulePublic:
    """Add a rule: when `condition` matches a classified message, do `action`."""
    await get_account(uow.session, principal.tenant_id, account_id)
    rules.validate(body.condition, body.action)
    await ensure_rule_room(
        uow.session,
        tenant_id=principal.tenant_id,
        account_id=account_id,
        cap=settings.max_rules_per_account,
    )
    rule = await rules_repo.add(
        uow.session, Rule(tenant_id=principal.tenant_id, account_id=account_id, **body.model_dump())
    )
    await uow.commit()
    return rule_public(rule)


@router.get("/accounts/{account_id}/rules/{rule_id}", response_model=RulePublic, tags=["rules"])
async def get_rule(
    account_id: uuid.UUID, rule_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> RulePublic:
    return rule_public(
        await rules.get_rule(
            uow.session, tenant_id=principal.tenant_id, account_id=account_id, rule_id=rule_id
        )
    )


@router.patch("/accounts/{account_id}/rules/{rule_id}", response_model=RulePublic, tags=["rules"])
async def update_rule(
    account_id: uuid.UUID,
    rule_id: uuid.UUID,
    body: Annotated[RuleUpdate, Body()],
    principal: PrincipalDep,
    uow: UowDep,
) -> RulePublic:
    """Change some fields of a rule."""
    rule = await rules.get_rule(
        uow.session, tenant_id=principal.tenant_id, account_id=account_id, rule_id=rule_id
    )
    values = body.model_dump(exclude_unset=True, exclude_none=True)
    rules.validate(values.get("condition", rule.condition), values.get("action", rule.action))
    rule = await rules_repo.update(uow.session, rule, values)
    await uow.commit()
    return rule_public(rule)


@router.delete("/accounts/{account_id}/rules/{rule_id}", status_code=204, tags=["rules"])
async def delete_rule(
    account_id: uuid.UUID, rule_id: uuid.UUID, principal: PrincipalDep, uow: UowDep
) -> Response:
    rule = await rules.get_rule(
        uow.session, tenant_id=principal.tenant_id, account_id=account_id, rule_id=rule_id
    )
    await rules_repo.delete(uow.session, rule)
    await uow.commit()
    return Response(status_code=204)
