"""`postroom webhooks`: outbound-event delivery seen from the database (no Flower needed)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from database.engine import Database
from database.repositories.tenant_events import deliveries as deliveries_repo
from settings import get_settings

app = typer.Typer(help="Tenants' webhook endpoints and their deliveries.", no_args_is_help=True)


async def _backlog(top: int) -> deliveries_repo.Backlog:
    db = Database.from_settings(get_settings(), pool_size=1)
    try:
        async with db.transaction() as session:
            return await deliveries_repo.backlog(session, top=top)
    finally:
        await db.dispose()


@app.command("stuck")
def stuck(
    top: Annotated[int, typer.Option("--top", help="How many endpoints to show.")] = 20,
) -> None:
    """The endpoints with the most deliveries waiting: how many, for how long, since when
    they fail and what went wrong last."""
    try:
        backlog = asyncio.run(_backlog(top))
    except Exception as exc:  # one sentence for the operator, never a traceback
        typer.echo(f"The command failed ({type(exc).__name__}).", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"open deliveries: {backlog.open}; oldest: {backlog.oldest_s:.0f} s")
    for e in backlog.worst:
        since = e.failing_since.isoformat() if e.failing_since else "-"
        typer.echo(
            f"{e.endpoint_id} tenant={e.tenant_id} status={e.status} open={e.open} "
            f"oldest={e.oldest_s:.0f}s failing_since={since} last_error={e.last_error or '-'}"
        )
