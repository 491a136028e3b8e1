"""`postroom admin rotate-credentials` re-encrypts OAuth client secrets and grants too."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from pydantic import SecretStr

from database.engine import Database
from database.models import OAuthApp, OAuthToken
from services.accounts.admin import rotate_all_credentials
from services.crypto import decrypt_json
from tests.api.keys import make_caller
from tests.oauth_fixtures import create_app, create_oauth_account, generic_app_body

pytestmark = pytest.mark.asyncio


async def test_rotation_re_encrypts_app_secrets_and_tokens(
    client: httpx.AsyncClient,
    db: Database,
    settings: Any,
    fresh_oauth: Any,
    oauth_dovecot: Any,
    xoauth2_smtp: Any,
) -> None:
    caller = await make_caller(db)
    app_id = await create_app(
        client, caller.headers, generic_app_body(fresh_oauth, oauth_dovecot, xoauth2_smtp)
    )
    await create_oauth_account(client, caller.headers, fresh_oauth, app_id)
    new_key = Fernet.generate_key().decode()
    both = settings.model_copy(
        update={
            "credential_keys": SecretStr(f"{new_key},{settings.credential_keys.get_secret_value()}")
        }
    )
    only_new = settings.model_copy(update={"credential_keys": SecretStr(new_key)})
    # In a transaction that is rolled back: the session's other rows keep the session's key.
    async with db.sessionmaker() as s:
        await rotate_all_credentials(s, settings=both)
        secret = (
            await s.execute(
                sa.select(OAuthApp.secret_ciphertext).where(OAuthApp.tenant_id == caller.tenant_id)
            )  # type: ignore[arg-type]
        ).scalar_one()
        grant = (
            await s.execute(
                sa.select(OAuthToken.ciphertext).where(OAuthToken.tenant_id == caller.tenant_id)
            )  # type: ignore[arg-type]
        ).scalar_one()
        await s.rollback()
    assert decrypt_json(only_new, secret)["client_secret"]
    assert decrypt_json(only_new, grant)["refresh_token"].startswith("rt-")
