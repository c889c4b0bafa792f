"""What every workload shares: the result record, the peers, and the harnesses that time awaits.

A workload is a generator: it runs every contender once per round, rounds interleaved so drift
on a noisy machine hits everyone alike, and yields the :class:`Result` of each contender (the
median round) as soon as a workload is measured, so the command line can print it at once.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
#: One call of a contender: ``one(i)`` awaits one offloaded no-op.
Call = Callable[[int], Awaitable[object]]
#: What a workload yields: the results of one or more workloads that finished together.
Batches = Iterator[list["Result"]]


def noop(x: int = 0) -> int:
    return x


async def trivial(x: int = 0) -> int:
    return x


def identity(x: T) -> T:
    return x


@dataclass
class Result:
    """One contender's figure for one workload; ``--json`` prints these fields as they are."""

    workload: str
    loop: str
    contender: str
    value: float
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list[float])


def results(
    workload: str, loop_name: str, samples: Mapping[str, list[float]], unit: str, higher_is_better: bool
) -> list[Result]:
    """One Result per contender: the median of its rounds."""
    return [Result(workload, loop_name, k, statistics.median(v), unit, higher_is_better, v) for k, v in samples.items()]


def peer(name: str) -> ModuleType | None:
    """The module ``name`` (say ``"anyio.to_thread"``) if that peer is installed, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


async def tasks(n: int, in_flight: int, one: Call) -> float:
    """Seconds for ``n`` calls of ``one(i)``, each in a task of its own, ``in_flight`` at a time
    (the shape of a ``gather`` or a ``TaskGroup`` bounded by a semaphore, minus the semaphore)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    it = iter(range(n))
    remaining = n

    def start() -> None:
        i = next(it, None)
        if i is not None:
            asyncio.ensure_future(one(i), loop=loop).add_done_callback(finished)

    def finished(task: asyncio.Future[object]) -> None:
        nonlocal remaining
        if done.done():
            return
        if task.cancelled() or task.exception() is not None:  # a broken contender ends the run
            done.set_exception(task.exception() or asyncio.CancelledError())
            return
        remaining -= 1
        if remaining == 0:
            done.set_result(None)
        else:
            start()

    t0 = time.perf_counter()
    for _ in range(in_flight):
        start()
    await done
    return time.perf_counter() - t0


async def fan(n: int, in_flight: int, one: Call) -> float:
    """Seconds for ``n`` awaits of ``one(i)`` by ``in_flight`` tasks, each awaiting in turn."""
    per = n // in_flight

    async def worker() -> None:
        for i in range(per):
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - t0


def per_call_us(n: int, fn: Callable[[], object]) -> float:
    """Microseconds per call of ``fn``, over ``n`` calls in a row."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def alternate(contenders: Mapping[str, T], round_: int) -> list[tuple[str, T]]:
    """The contenders in order on even rounds and reversed on odd ones: nobody always goes first."""
    items = list(contenders.items())
    return items if round_ % 2 == 0 else items[::-1]


def settle() -> None:
    """Untimed: write back dirty pages, so no contender pays for the previous one's writes."""
    if hasattr(os, "sync"):
        os.sync()
