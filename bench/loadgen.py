"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams.

Requests are prepared before the clock starts, so the client spends its time sending and
reading; both servers under test get the same client, which is what keeps ratios honest.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(len(data) * p / 100))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def run_closed(host: str, port: int, requests: list[bytes], concurrency: int) -> Result:
    """`concurrency` connections, each sending its next request when the previous answered."""
    queue = iter(requests)
    latencies: list[float] = []
    errors = 0

    async def conn() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for raw in queue:
                t0 = time.perf_counter()
                writer.write(raw)
                status = await _read_response(reader)
                latencies.append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    return Result(len(latencies), time.perf_counter() - start, latencies, errors)


async def run_open(
    host: str, port: int, requests: list[bytes], rate: float, conns: int = 64
) -> Result:
    """Send at a fixed rate (open loop): latency counts from the scheduled send time."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0

    async def one(raw: bytes, due: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            writer.write(raw)
            status = await _read_response(reader)
            latencies.append((time.perf_counter() - due) * 1000)
            if status != 200:
                errors += 1
        finally:
            pool.put_nowait((reader, writer))

    start = time.perf_counter()
    tasks = []
    for i, raw in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(raw, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    return Result(len(latencies), elapsed, latencies, errors)
