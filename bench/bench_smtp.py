"""SMTP sending: postroom's SMTP client (services.smtp, one reused connection per session)
against Postfix's `smtp-source`, both sending the same number of same-sized messages into
Postfix's `smtp-sink`, in the same run. Figures: messages/s and the ratio.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from services.compose import Person, compose
from services.smtp import SmtpConfig, SmtpConnection
from tests.peers import free_port, wait_port

MESSAGES = int(os.environ.get("BENCH_SMTP_MESSAGES", "2000"))
SESSIONS = [int(s) for s in os.environ.get("BENCH_SMTP_SESSIONS", "1,4").split(",")]
BODY_BYTES = 2000
ROUNDS = 5
SENDER, RECIPIENT = "bench@example.com", "sink@example.org"


def _tool(name: str) -> str:
    found = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(found).exists():
        sys.exit(f"{name} is missing: install the Debian package postfix (it ships {name}).")
    return found


def _messages(n: int) -> list[bytes]:
    """n distinct messages (own Message-ID each) of about BODY_BYTES of body."""
    line = "The quick brown fox jumps over the lazy dog, again and again. 0123456789\n"
    body = (line * (BODY_BYTES // len(line) + 1))[:BODY_BYTES]
    sender, to = Person(SENDER, "Bench Sender"), [Person(RECIPIENT, "Sink")]
    return [
        compose(
            sender=sender,
            to=to,
            cc=[],
            bcc=[],
            subject=f"Benchmark message {i}",
            body_text=body,
            body_html=None,
        ).data
        for i in range(n)
    ]


async def _postroom(port: int, messages: list[bytes], sessions: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    config = SmtpConfig(
        host="127.0.0.1",
        port=port,
        security="none",
        timeout=30,
        allowed_private_hosts="127.0.0.0/8",  # the local relay; see services/destination.py
    )
    chunks = [messages[i::sessions] for i in range(sessions)]

    async def run(chunk: list[bytes]) -> None:
        async with SmtpConnection(config) as conn:  # one connection for the whole batch
            for data in chunk:
                await conn.send(sender=SENDER, recipients=[RECIPIENT], data=data)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(run(c) for c in chunks))
    return time.perf_counter() - start, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _smtp_source(port: int, sessions: int, size: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of smtp-source)."""
    argv = [
        _tool("smtp-source"),
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(MESSAGES),
        "-l",
        str(size),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"127.0.0.1:{port}",
    ]
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu


def main() -> None:
    port = free_port()
    sink = subprocess.Popen(
        # As root, smtp-sink insists on dropping to a user: postfix's own.
        [
            _tool("smtp-sink"),
            *(["-u", "postfix"] if os.geteuid() == 0 else []),
            f"127.0.0.1:{port}",
            "256",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        start = time.perf_counter()
        messages = _messages(MESSAGES)
        compose_s = time.perf_counter() - start
        size = sum(len(m) for m in messages) // len(messages)
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(
            f"{MESSAGES} messages of {size} bytes into smtp-sink; composing them took "
            f"{compose_s:.2f}s ({MESSAGES / compose_s:,.0f}/s, not counted below)"
        )
        print(
            f"{'sessions':>8} {'smtp-source msg/s':>18} {'postroom msg/s':>15} {'ratio':>6}"
            f" {'CPU us/msg source':>18} {'postroom':>9}"
        )
        for sessions in SESSIONS:
            _smtp_source(port, sessions, size)  # warm-up
            # Interleaved rounds, best of each: a busy machine slows both sides alike.
            floor_s = ours_s = floor_cpu = ours_cpu = float("inf")
            for _ in range(ROUNDS):
                wall, cpu = _smtp_source(port, sessions, size)
                floor_s, floor_cpu = min(floor_s, wall), min(floor_cpu, cpu)
                wall, cpu = asyncio.run(_postroom(port, messages, sessions))
                ours_s, ours_cpu = min(ours_s, wall), min(ours_cpu, cpu)
            floor, ours = MESSAGES / floor_s, MESSAGES / ours_s
            print(
                f"{sessions:>8} {floor:>18,.0f} {ours:>15,.0f} {ours / floor:>6.2f}"
                f" {floor_cpu / MESSAGES * 1e6:>18,.0f} {ours_cpu / MESSAGES * 1e6:>9,.0f}"
            )
        start = time.perf_counter()
        asyncio.run(_postroom(port, _messages(MESSAGES), 1))  # composing counted here
        whole = MESSAGES / (time.perf_counter() - start)
        print(f"postroom composing each message too, 1 session: {whole:,.0f} msg/s")
        print(f"goal: ratio >= 0.5 (ARCHITECTURE.md); best of {ROUNDS} interleaved runs each")
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
