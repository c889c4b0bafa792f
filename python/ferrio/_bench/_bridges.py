"""Bridges between sync and async code: ``ferrio.run`` from sync code, ``from_thread`` calls
back into a loop, and blocking portals, against asyncio, asgiref and anyio."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import ferrio

from ._harness import Batches, LoopFactory, peer, per_call_us, results, trivial


def run_from_sync(rounds: int, n: int) -> Batches:
    """``n`` runs of a trivial coroutine from plain sync code (no loop running in this thread).

    Always on asyncio: ``ferrio.run`` and ``asyncio.run`` make their own asyncio loops."""
    contenders: dict[str, Callable[[], object]] = {
        "ferrio.run": lambda: ferrio.run(trivial()),
        "asyncio.run": lambda: asyncio.run(trivial()),
    }
    runner = None
    if sys.version_info >= (3, 11):
        runner = asyncio.Runner()
        reused = runner
        contenders["reused asyncio.Runner"] = lambda: reused.run(trivial())
    asgiref_sync = peer("asgiref.sync")
    if asgiref_sync is not None:
        async_to_sync = asgiref_sync.async_to_sync
        contenders["asgiref async_to_sync"] = lambda: async_to_sync(trivial)()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    try:
        for _ in range(rounds):
            for name, fn in contenders.items():
                # asyncio.run and asgiref start a loop or a thread per call: fewer calls keep the run short.
                k = n if name in ("ferrio.run", "reused asyncio.Runner") else max(1, n // 10)
                samples[name].append(per_call_us(k, fn))
    finally:
        if runner is not None:
            runner.close()
    yield results(f"{n:,} x run(trivial()) from sync code, per call", "asyncio", samples, "us", False)


def from_thread(loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, n: int) -> Batches:
    """``n`` calls from a worker thread back into the loop, with ``run`` and with ``run_sync``."""

    def noop_sync() -> None:
        return None

    def ferrio_run() -> float:
        return per_call_us(n, lambda: ferrio.from_thread.run(trivial))

    def ferrio_run_sync() -> float:
        return per_call_us(n, lambda: ferrio.from_thread.run_sync(noop_sync))

    cases: dict[str, dict[str, Callable[[], Awaitable[float]]]] = {
        "from_thread.run(trivial) from a worker": {"ferrio": lambda: ferrio.to_thread(ferrio_run)},
        "from_thread.run_sync(noop) from a worker": {"ferrio": lambda: ferrio.to_thread(ferrio_run_sync)},
    }
    a_to, a_from = peer("anyio.to_thread"), peer("anyio.from_thread")
    if a_to is not None and a_from is not None:
        to_thread: Callable[[Callable[[], float]], Awaitable[float]] = a_to.run_sync
        run: Callable[[Callable[[], Awaitable[int]]], object] = a_from.run
        run_sync: Callable[[Callable[[], None]], object] = a_from.run_sync
        cases["from_thread.run(trivial) from a worker"]["anyio"] = lambda: to_thread(
            lambda: per_call_us(n, lambda: run(trivial))
        )
        cases["from_thread.run_sync(noop) from a worker"]["anyio"] = lambda: to_thread(
            lambda: per_call_us(n, lambda: run_sync(noop_sync))
        )
    for workload, contenders in cases.items():
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(rounds):
            for name, make in contenders.items():
                samples[name].append(loop.run_until_complete(make()))
        yield results(f"{n:,} x {workload}, per call", loop_name, samples, "us", False)


def portal(loop_name: str, new_loop: LoopFactory, rounds: int, n: int) -> Batches:
    """``n`` calls of a trivial coroutine through a blocking portal whose loop ``new_loop`` makes."""
    samples: dict[str, list[float]] = {"ferrio portal.call": []}
    a_from = peer("anyio.from_thread")
    if a_from is not None:
        samples["anyio portal.call"] = []
    with contextlib.ExitStack() as stack:
        fp = stack.enter_context(ferrio.start_blocking_portal(new_loop))
        ap: Any = None
        if a_from is not None:
            ap = stack.enter_context(a_from.start_blocking_portal(backend_options={"loop_factory": new_loop}))
        for _ in range(rounds):
            samples["ferrio portal.call"].append(per_call_us(n, lambda: fp.call(trivial)))
            if ap is not None:
                samples["anyio portal.call"].append(per_call_us(n, lambda: ap.call(trivial)))
    yield results(f"{n:,} x portal.call(trivial), per call", loop_name, samples, "us", False)
