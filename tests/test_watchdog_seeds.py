"""The blocking mistakes the source documents warn about, each caught by ``ferrio.watchdog`` while
it blocks, naming the coroutine that made it: a ``time.sleep``, a file read with the builtin
``open()`` (here of a FIFO, whose writer comes 0.3 s later), and a ``threading.Lock`` that another
thread holds. Each block lasts 0.3 s (the stimulus), three times the threshold."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import ferrio

THRESHOLD = 0.1
BLOCK = 0.3


def _one_report(dog: ferrio.Watchdog, function: str) -> ferrio.BlockReport:
    (report,) = dog.reports
    names = [frame.name for frame in report.samples[0].stack]
    assert names[-1] == function, names
    assert report.duration >= THRESHOLD, report.duration
    assert report.task_name is not None
    assert "blocked for" in report.format()
    return report


async def test_time_sleep_in_a_coroutine_is_reported() -> None:
    async def bad() -> None:
        time.sleep(BLOCK)  # the documents' "WRONG - blocks event loop"

    async with ferrio.watchdog(THRESHOLD, log=False) as dog:
        await bad()
    report = _one_report(dog, "bad")
    assert "ferrio.to_thread" in report.advice()


async def test_reading_a_file_with_open_in_a_coroutine_is_reported(tmp_path: Path) -> None:
    fifo = tmp_path / "file.txt"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "w") as f:
            f.write("contents")

    late_writer = threading.Timer(BLOCK, writer)

    async def bad() -> str:
        late_writer.start()
        with open(fifo) as f:  # the documents' "Blocking!": open() waits for the writer
            return f.read()

    try:
        async with ferrio.watchdog(THRESHOLD, log=False) as dog:
            assert await bad() == "contents"
    finally:
        late_writer.join(10)
    _one_report(dog, "bad")


async def test_a_threading_lock_held_elsewhere_is_reported() -> None:
    sync_lock = threading.Lock()
    held = threading.Event()

    def holder() -> None:
        with sync_lock:
            held.set()
            time.sleep(BLOCK)  # the other thread's work under the lock: the block's length

    other = threading.Thread(target=holder)
    other.start()
    assert held.wait(10)

    async def bad() -> None:
        with sync_lock:  # the documents' "threading.Lock() in async code blocks event loop"
            pass

    try:
        async with ferrio.watchdog(THRESHOLD, log=False) as dog:
            await bad()
    finally:
        other.join(10)
    _one_report(dog, "bad")


async def test_handlers_that_block_one_after_the_other_are_each_reported() -> None:
    # Three requests that arrived together, each handler blocking: the loop runs them in one
    # iteration, with no timer between them, so the samples name each in turn.
    async def handler() -> None:
        time.sleep(BLOCK)

    async with ferrio.watchdog(THRESHOLD, log=False) as dog:
        await asyncio.sleep(0)
        await asyncio.gather(handler(), handler(), handler())
    reports = dog.reports
    assert len({r.task_name for r in reports}) == 3, [r.format() for r in reports]
    assert [r.function for r in reports] == ["handler"] * 3
    assert all(r.duration >= THRESHOLD for r in reports)
    assert dog.statistics().busy == 0
