"""CPU-bound calls on worker processes, with their log lines shown by the parent.

Six calls of ``blocks(n)`` run on a pool of three worker processes. Each call logs through
``logging`` in its worker; ferrio hands the records to the parent's loggers, so the format's
``%(process)5s`` shows which worker ran each call, as ``ProcessPoolExecutor`` shows it when the
workers inherit the logging set-up. Run it with ``python examples/process_blocks.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import ferrio


def blocks(n: int) -> int:
    log = logging.getLogger(f"blocks({n})")
    log.info("running")
    time.sleep(0.1)
    log.info("done")
    return n**2


async def run_blocking_tasks(executor: ferrio.ProcessPool) -> None:
    log = logging.getLogger("run_blocking_tasks")
    log.info("starting")
    log.info("creating executor tasks")
    loop = asyncio.get_running_loop()
    blocking_tasks = [loop.run_in_executor(executor, blocks, i) for i in range(6)]
    log.info("waiting for executor tasks")
    results = await asyncio.gather(*blocking_tasks)
    log.info(f"results: {results!r}")
    log.info("exiting")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="PID %(process)5s %(name)18s: %(message)s", stream=sys.stdout)
    with ferrio.ProcessPool(max_workers=3) as executor:
        asyncio.run(run_blocking_tasks(executor))
