"""docker/compose.yml and docker/Dockerfile checked against the project (no Docker engine here):
every command, module, script, queue and setting they name must exist."""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
from typing import Any

import pytest
import yaml

from settings import Settings
from tests.peers import ROOT, VENV_BIN
from worker.config import all_queues

COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP = [name for name, s in SERVICES.items() if s.get("image") == "postroom:local"]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
IGNORED = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def defines(module: str, attr: str) -> bool:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        return False
    tree = ast.parse(path.read_text())
    return any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", None) == attr for t in n.targets)
        for n in tree.body
    )


def check_command(argv: list[str]) -> None:
    """Fail unless the program exists in the venv and what it is asked to run exists."""
    prog, args = argv[0], argv[1:]
    if prog in ("sh", "/bin/sh"):
        assert args[0] == "-c"
        for part in args[1].split("&&"):
            check_command(shlex.split(part))
        return
    assert (VENV_BIN / prog).exists(), f"{prog} is not installed by the project"
    if prog == "python":
        if args[0] == "-c":
            compile(args[1], "<healthcheck>", "exec")
            return
        script = ROOT / args[0]
        assert script.exists(), args[0]
        if script.name == "healthcheck.py":
            assert f'"{args[1]}": check_{args[1]}' in script.read_text()
    elif prog == "uvicorn":
        module, _, attr = args[0].partition(":")
        assert defines(module, attr), args[0]
    elif prog == "celery":
        assert args[:2] == ["-A", "worker.app"] and defines("worker.app", "celery_app")
        assert args[2] in ("worker", "beat", "flower")
        if "-Q" in args:
            queues = args[args.index("-Q") + 1].split(",")
            assert set(queues) <= set(all_queues()), queues
    elif prog == "alembic":
        assert args == ["upgrade", "head"]
        assert (ROOT / "alembic" / "env.py").exists()
        assert "[tool.alembic]" in (ROOT / "pyproject.toml").read_text()
    else:
        pytest.fail(f"unexpected program {prog}")


@pytest.mark.parametrize("name", APP)
def test_commands_and_healthchecks_name_real_things(name: str) -> None:
    service = SERVICES[name]
    check_command(service["command"])
    test = (service.get("healthcheck") or {}).get("test")
    if test and not service["healthcheck"].get("disable"):
        assert test[0] == "CMD"
        check_command(test[1:])


def test_every_variable_is_a_real_setting() -> None:
    fields = {f"POSTROOM_{name.upper()}" for name in Settings.model_fields}
    seen = set()
    for service in SERVICES.values():
        for key in service.get("environment") or {}:
            if key.startswith("POSTROOM_"):
                assert key in fields, f"{key} is not a Settings field"
                seen.add(key)
    assert {"POSTROOM_DATABASE_URL", "POSTROOM_REDIS_URL"} <= seen
    docs = (ROOT / "docker" / "compose.yml").read_text()
    for key in re.findall(r"POSTROOM_[A-Z_]+", docs + DOCKERFILE):
        assert key in fields, f"{key} is named but is not a Settings field"


def test_stack_shape() -> None:
    assert {"postgres", "redis", "migrate", "api", "beat", "flower"} <= set(SERVICES)
    queues = set()
    for name in APP:
        cmd = SERVICES[name]["command"]
        if "worker" in cmd and "-Q" in cmd:
            queues |= set(cmd[cmd.index("-Q") + 1].split(","))
    assert queues == set(all_queues()), "every queue (every lane) has a worker"
    redis_cmd = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync everysec" in redis_cmd
    assert SERVICES["migrate"]["restart"] == "no"
    for name, service in SERVICES.items():
        if name != "migrate":
            assert service["restart"] == "unless-stopped", name
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in SERVICES
            if cond["condition"] == "service_healthy":
                assert "test" in SERVICES[dep]["healthcheck"], f"{dep} has no healthcheck"
            else:
                assert (dep, cond["condition"]) == ("migrate", "service_completed_successfully")
    for name in APP:
        if name != "migrate":
            assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
                "service_completed_successfully"
            )
            assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    beats = [n for n in APP if SERVICES[n]["command"][3:4] == ["beat"]]
    assert beats == ["beat"]


def test_dockerfile_is_multi_stage_slim_non_root_and_copies_real_paths() -> None:
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]
    assert len(stages) >= 2 and all(s.startswith("python:3.11-slim") for s in stages)
    final = stages[-1]
    assert not re.search(r"build-essential|gcc|apt-get install", final)
    user = re.findall(r"^USER (\S+)", final, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, flags=re.M):
        parts = [p for p in shlex.split(line.rstrip("\\")) if not p.startswith("--")]
        if "--from=" in line:
            continue
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: no such path"
            assert not any(fnmatch.fnmatch(src, pat) for pat in IGNORED), f"{src} is ignored"
    cmd = re.search(r'^CMD \["uvicorn", "([\w.]+):(\w+)"', DOCKERFILE, flags=re.M)
    assert cmd and defines(cmd.group(1), cmd.group(2))
    assert "scripts/healthcheck.py" in DOCKERFILE and (ROOT / "scripts/healthcheck.py").exists()


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for pattern in (".env", ".venv", ".git", "**/__pycache__"):
        assert pattern in IGNORED
