"""The template worker pool: a job past its wall time, CPU or memory is refused and its worker
replaced, and the pool keeps serving afterwards (the sandbox itself: test_templates.py)."""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time

import pytest

from services.outbound.template_pool import Limits, TemplatePool, _limit_cpu
from services.outbound.templates import Parts, TemplateInvalid, TemplateVariableMissing

# Legitimate work the sandbox allows (about a quarter of a second of steps), but more than
# the tiny limits these pools get.
SLOW = "{% for a in s %}{% for b in s %}{{ a ~ b }}{% endfor %}{% endfor %}"
SLOW_VARS = {"s": "x" * 250}


def parts(text: str) -> Parts:
    return Parts(subject="Hi {{ name }}", text=text, html="<p>{{ name }}</p>")


@pytest.fixture
def make_pool():
    made: list[TemplatePool] = []

    def make(**limits) -> TemplatePool:
        made.append(TemplatePool(Limits(**limits)))
        return made[-1]

    yield make
    for p in made:
        p.close()


async def test_render_and_check_answer_like_the_sandbox(make_pool) -> None:
    pool = make_pool()
    out = await pool.run("render", parts("Dear {{ name }}"), {"name": "<Bo>"})
    assert out == Parts(subject="Hi <Bo>", text="Dear <Bo>", html="<p>&lt;Bo&gt;</p>")
    await pool.run("check", parts("{{ name }}"), {})
    with pytest.raises(TemplateVariableMissing):
        await pool.run("render", parts("{{ other }}"), {"name": "x"})
    with pytest.raises(TemplateInvalid, match="bits"):
        await pool.run("check", parts("{{ (9 ** 60) ** 60 }}"), {})
    # Many at once share the workers.
    many = await asyncio.gather(
        *(pool.run("render", parts(f"n{i}"), {"name": str(i)}) for i in range(20))
    )
    assert [p.text for p in many] == [f"n{i}" for i in range(20)]
    assert pool.replaced == 0


async def test_a_job_past_its_wall_time_is_refused_and_its_worker_replaced(make_pool) -> None:
    pool = make_pool(workers=1, wall_s=0.05)
    await pool.run("check", parts("warm"), {})  # the worker's start is not the job's time
    started = time.monotonic()
    with pytest.raises(TemplateInvalid, match="takes more than"):
        await pool.run("render", parts(SLOW), {**SLOW_VARS, "name": "x"})
    assert time.monotonic() - started < 5
    assert pool.replaced == 1
    out = await pool.run("render", parts("ok"), {"name": "x"})
    assert out.text == "ok"


async def test_a_job_past_its_memory_is_refused_and_its_worker_replaced(make_pool) -> None:
    pool = make_pool(workers=1, memory_bytes=1024 * 1024)
    with pytest.raises(TemplateInvalid, match="memory"):
        await pool.run("render", parts("{{ s * 90000 }}"), {"s": "é" * 10, "name": 1})
    assert pool.replaced == 1
    assert (await pool.run("render", parts("ok"), {"name": "x"})).text == "ok"


def _burn_after_limit() -> None:
    _limit_cpu(1)
    while True:
        pass


def test_the_cpu_limit_ends_a_worker_that_spins() -> None:
    """The sandbox stops its own renders at 1 s; RLIMIT_CPU is the backstop for anything it
    misses: a worker that spins past its allowance is ended by the kernel (SIGXCPU)."""
    proc = multiprocessing.get_context("spawn").Process(target=_burn_after_limit)
    started = time.monotonic()
    proc.start()
    proc.join(30)
    assert not proc.is_alive()
    assert proc.exitcode == -signal.SIGXCPU
    assert time.monotonic() - started < 10
