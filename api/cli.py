"""`postroom` command line: `postroom admin ...` for tenants, users, API keys and credentials.

Other command groups plug in with one line, e.g. `app.add_typer(dlq.app, name="dlq")`.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from api import cli_dlq, cli_webhooks
from api.auth import generate_key
from api.errors import is_database_unavailable
from database.engine import Database
from database.repositories import keys as keys_repo
from database.repositories import tenants as tenants_repo
from services.accounts.admin import rotate_all_credentials
from services.errors import PostroomError
from settings import get_settings
from worker.config import LANES
from worker.dispatch import publish_weights

T = TypeVar("T")

app = typer.Typer(
    help="postroom: mail-processing backend.", no_args_is_help=True, add_completion=False
)
admin = typer.Typer(help="Tenants, users, API keys and credentials.", no_args_is_help=True)
app.add_typer(admin, name="admin")
app.add_typer(cli_dlq.app, name="dlq")
app.add_typer(cli_webhooks.app, name="webhooks")


class CliError(Exception):
    """A failure reported to the operator as one sentence on standard error."""


def fail(message: str) -> None:
    raise CliError(message)


def run_in_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one committed transaction on a short-lived engine."""

    async def runner() -> T:
        db = Database.from_settings(get_settings(), pool_size=1)
        try:
            async with db.transaction() as session:
                return await work(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(runner())
    except CliError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except PostroomError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # one sentence for the operator, never a traceback
        causes: set[str] = set()
        seen = exc.__cause__ or exc.__context__
        while seen is not None and len(causes) < 8:
            causes.add(type(seen).__name__)
            seen = seen.__cause__ or seen.__context__
        if is_database_unavailable(exc) or "InvalidCatalogNameError" in causes:
            typer.echo(f"Cannot reach the database ({type(exc).__name__}).", err=True)
        else:
            typer.echo(f"The command failed ({type(exc).__name__}).", err=True)
        raise typer.Exit(1) from None


async def _tenant_id(session: AsyncSession, name: str) -> uuid.UUID:
    tenant = await tenants_repo.get_tenant_by_name(session, name)
    if tenant is None:
        fail(f"No tenant named {name!r}.")
    assert tenant is not None
    return tenant.id


@admin.command("create-tenant")
def create_tenant(name: Annotated[str, typer.Argument(help="Unique tenant name.")]) -> None:
    """Create a tenant and print its id."""
    if not name.strip() or len(name) > 200:
        typer.echo("The tenant name must be 1 to 200 characters.", err=True)
        raise typer.Exit(1)

    async def work(session: AsyncSession) -> uuid.UUID:
        tenant_id = await tenants_repo.create_tenant(session, name)
        if tenant_id is None:
            fail(f"A tenant named {name!r} already exists.")
        assert tenant_id is not None
        return tenant_id

    typer.echo(str(run_in_session(work)))


@admin.command("create-user")
def create_user(
    email: Annotated[str, typer.Argument(help="The user's email address.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")],
) -> None:
    """Create a user in a tenant and print its id."""
    if "@" not in email or len(email) > 320:
        typer.echo(f"{email!r} is not an email address.", err=True)
        raise typer.Exit(1)

    async def work(session: AsyncSession) -> uuid.UUID:
        user_id = await tenants_repo.create_user(session, await _tenant_id(session, tenant), email)
        if user_id is None:
            fail(f"User {email!r} already exists in tenant {tenant!r}.")
        assert user_id is not None
        return user_id

    typer.echo(str(run_in_session(work)))


@admin.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")],
    user: Annotated[str, typer.Option("--user", help="Email of the user the key acts as.")],
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    new = generate_key()

    async def work(session: AsyncSession) -> uuid.UUID:
        tenant_id = await _tenant_id(session, tenant)
        found = await tenants_repo.get_user_by_email(session, tenant_id, user)
        if found is None:
            fail(f"No user {user!r} in tenant {tenant!r}.")
        assert found is not None
        return await keys_repo.create(
            session, tenant_id=tenant_id, user_id=found.id, key_hash=new.key_hash, prefix=new.prefix
        )

    key_id = run_in_session(work)
    typer.echo(f"key id: {key_id} (store the key now: it is not shown again)")
    typer.echo(new.key)


@admin.command("list-keys")
def list_keys(tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")]) -> None:
    """One line per key: `<key_id> <email> <created_at> <active|revoked>`."""

    async def work(session: AsyncSession) -> list[keys_repo.KeyRow]:
        return await keys_repo.list_for_tenant(session, await _tenant_id(session, tenant))

    for row in run_in_session(work):
        state = "revoked" if row.revoked_at else "active"
        typer.echo(f"{row.id} {row.email} {row.created_at.isoformat()} {state}")


@admin.command("revoke-key")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key id from list-keys.")]) -> None:
    """Revoke a key; its next request answers 401."""
    try:
        kid = uuid.UUID(key_id)
    except ValueError:
        typer.echo(f"{key_id!r} is not a key id.", err=True)
        raise typer.Exit(1) from None

    async def work(session: AsyncSession) -> bool | None:
        return await keys_repo.revoke(session, kid)

    outcome = run_in_session(work)
    if outcome is None:
        typer.echo(f"No API key with id {key_id}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {kid}" if outcome else f"{kid} was already revoked")


@admin.command("set-weight")
def set_weight(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    weight: Annotated[int, typer.Argument(help=f"Lanes per latency class, 1 to {LANES}.")],
) -> None:
    """Give a tenant more turns: its tasks spread over WEIGHT lanes of each class.

    Lanes take turns, so a backlogged tenant of weight 2 is served about twice as often as
    one of weight 1 (docs/architecture.md "Lanes").
    """
    if not 1 <= weight <= LANES:
        typer.echo(f"The weight must be 1 to {LANES}.", err=True)
        raise typer.Exit(1)

    async def work(session: AsyncSession) -> dict[str, int]:
        await tenants_repo.set_weight(session, await _tenant_id(session, tenant), weight)
        return await tenants_repo.weights(session)

    weights = run_in_session(work)
    try:
        publish_weights(get_settings().redis_url, weights)
    except Exception as exc:
        typer.echo(
            f"Saved, but Redis did not take the new weights ({type(exc).__name__}); "
            "run the command again once it answers.",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"{tenant} {weight}")


@admin.command("rotate-credentials")
def rotate_credentials() -> None:
    """Re-encrypt every stored credential with the first key of POSTROOM_CREDENTIAL_KEYS."""
    settings = get_settings()

    async def work(session: AsyncSession) -> int:
        return await rotate_all_credentials(session, settings=settings)

    typer.echo(f"re-encrypted {run_in_session(work)} credential(s)")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
