"""`postroom admin ...` run as a process, as an operator or a script would."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa
from cryptography.fernet import Fernet
from pydantic import SecretStr

from database.models import Credential
from services.crypto import decrypt_json
from tests.api.keys import imap_account
from tests.helpers import ENV

ROOT = Path(__file__).resolve().parents[2]
POSTROOM = str(ROOT / ".venv" / "bin" / "postroom")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [POSTROOM, "admin", *args],
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_create_tenant_user_key_then_call_the_api(
    client: httpx.AsyncClient, settings
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    assert run("create-tenant", tenant).returncode == 0
    assert run("create-user", "--tenant", tenant, "ops@acme.test").returncode == 0
    made = run("create-key", "--tenant", tenant, "--user", "ops@acme.test")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    r = await client.get("/v1/accounts", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200

    listed = run("list-keys", "--tenant", tenant)
    assert listed.returncode == 0
    [line] = listed.stdout.strip().splitlines()
    key_id, email, created_at, state = line.split(" ")
    assert email == "ops@acme.test" and state == "active" and created_at
    assert key not in listed.stdout

    revoked = run("revoke-key", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert run("list-keys", "--tenant", tenant).stdout.split()[-1] == "revoked"
    r = await client.get("/v1/accounts", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


async def test_errors_exit_non_zero_with_one_sentence(settings) -> None:
    tenant = f"dup-{uuid.uuid4().hex[:6]}"
    assert run("create-tenant", tenant).returncode == 0
    for args in (
        ("create-tenant", tenant),
        ("create-user", "--tenant", "no-such-tenant", "a@b.c"),
        ("create-key", "--tenant", tenant, "--user", "nobody@x.y"),
        ("list-keys", "--tenant", "no-such-tenant"),
        ("revoke-key", str(uuid.uuid4())),
        ("revoke-key", "not-a-uuid"),
    ):
        out = run(*args)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith("."), (args, out.stderr)
        assert "Traceback" not in out.stderr


async def test_rotate_credentials_re_encrypts_with_the_first_key(
    empty_database, client, db, settings
) -> None:
    # The rotation re-encrypts every tenant's credentials with a key only this test knows:
    # other tests' accounts must not be there to lose theirs.
    tenant = f"rot-{uuid.uuid4().hex[:6]}"
    run("create-tenant", tenant)
    run("create-user", "--tenant", tenant, "r@x.test")
    key = (
        run("create-key", "--tenant", tenant, "--user", "r@x.test").stdout.strip().splitlines()[-1]
    )
    r = await client.post(
        "/v1/accounts",
        json=imap_account(password="rotate-me"),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201
    old_key = ENV["POSTROOM_CREDENTIAL_KEYS"]
    new_key = Fernet.generate_key().decode()
    env = {**ENV, "POSTROOM_CREDENTIAL_KEYS": f"{new_key},{old_key}"}
    out = run("rotate-credentials", env=env)
    assert out.returncode == 0, out.stderr
    async with db.sessionmaker() as s:
        mine = sa.select(Credential.ciphertext).where(Credential.account_id == r.json()["id"])
        token = (await s.execute(mine)).scalar_one()
    assert Fernet(new_key.encode()).decrypt(token.encode())
    only_new = settings.model_copy(update={"credential_keys": SecretStr(new_key)})
    assert decrypt_json(only_new, token)["imap"]["password"] == "rotate-me"
