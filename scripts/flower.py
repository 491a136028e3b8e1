"""Serve Flower for postroom's Celery app (`make flower`).

Port: POSTROOM_FLOWER_PORT (5555). With POSTROOM_FLOWER_BASIC_AUTH=`user:password` Flower asks
for that login and listens on every interface; without it, it listens on 127.0.0.1 only.
History: POSTROOM_FLOWER_DB (.data/flower.db) keeps the task list across restarts; Flower
writes it when it stops (SIGTERM, Ctrl-C) and every minute, so a crash loses at most a minute.
The password travels to Flower in its environment (FLOWER_BASIC_AUTH), never on the command
line (visible to every user in `ps`) and never in our output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from settings import Settings, get_settings  # noqa: E402

SAVE_EVERY_MS = 60_000  # besides the save on shutdown; a crash loses at most this much


def plan(
    settings: Settings,
    *,
    port: int | None = None,
    address: str | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, description) for the Flower process; the description is safe to print."""
    env = dict(os.environ if environ is None else environ)
    # Flower imports prometheus-client too; its own metrics must not land in our shared
    # directory and be summed into postroom's /metrics.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("FLOWER_BASIC_AUTH", None)
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else ""
    if auth:
        user, sep, password = auth.partition(":")
        if not (user and sep and password) or "," in auth:
            raise SystemExit(
                "POSTROOM_FLOWER_BASIC_AUTH must look like user:password (no commas); "
                "Flower was not started."
            )
        env["FLOWER_BASIC_AUTH"] = auth
        bind = address or "0.0.0.0"  # noqa: S104 - protected by basic auth, reachable on purpose
        who = f"basic auth as {user!r}"
    else:
        bind = address or "127.0.0.1"
        who = "no login (set POSTROOM_FLOWER_BASIC_AUTH=user:password to require one)"
    port = port or settings.flower_port
    celery = str(Path(sys.executable).parent / "celery")
    argv = [celery, "-A", "worker.app", "flower", f"--port={port}", f"--address={bind}"]
    history = "history in memory only"
    if settings.flower_db:
        db = ROOT / settings.flower_db  # an absolute setting stays as it is
        argv += ["--persistent=True", f"--db={db}", f"--state_save_interval={SAVE_EVERY_MS}"]
        history = f"history in {db}"
    return argv, env, f"Flower on http://{bind}:{port}/ with {who}; {history}"


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default: POSTROOM_FLOWER_PORT")
    parser.add_argument("--address", default=None, help="default: see above")
    ns = parser.parse_args(args)
    argv, env, description = plan(get_settings(), port=ns.port, address=ns.address)
    print(description, file=sys.stderr, flush=True)
    os.chdir(ROOT)
    db = next((a.partition("=")[2] for a in argv if a.startswith("--db=")), None)
    if db:
        # Task names, arguments and results live in there: for this user only.
        Path(db).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # exec: Flower becomes this process, so signals from honcho or Docker reach it directly.
    os.execve(argv[0], argv, env)  # noqa: S606 - fixed argv, no shell


if __name__ == "__main__":
    main()
