"""A counter shared by worker processes, where one killed worker fails only its own call.

With ``ProcessPoolExecutor`` one would share a ``multiprocessing.Value`` through an initializer
and bump it under ``get_lock()``. Here the counter is a ``ferrio.SharedCounter``: one atomic add
in shared memory, no lock, usable from the parent's threads at the same time. The calls go
through ``loop.run_in_executor`` first, then through ``pool.run``; a worker killed half way
through fails only its own call. Run it with ``python examples/process_shared_counter.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from functools import partial

import ferrio

shared_counter: ferrio.SharedCounter | None = None


def init(counter: ferrio.SharedCounter) -> None:
    global shared_counter
    shared_counter = counter


def increment_and_print(to_print: str) -> None:
    assert shared_counter is not None
    shared_counter.add(1)
    print(to_print, flush=True)


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    counter = ferrio.SharedCounter(0)
    async with ferrio.ProcessPool(initializer=init, initargs=(counter,)) as pool:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(pool, partial(increment_and_print, word)) for word in ("hello", "how", "are", "you")
        ]
        await asyncio.gather(*futures)
        print("shared_counter:", counter.value)

        try:
            await pool.run(crash)
        except ferrio.WorkerCrashed as e:
            print(f"crash: {e.signal.name if e.signal else e.exitcode} in '{e.function}', pool still up")
        await asyncio.gather(*(pool.run(increment_and_print, w) for w in ("again",) * 4))
        print("shared_counter:", counter.value)


if __name__ == "__main__":
    asyncio.run(main())
