"""Files: ``ferrio.open_file`` and ``ferrio.read_files`` against plain sync code, aiofiles, anyio
and aiofile, in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import ferrio

from ._harness import Batches, LoopFactory, Result, alternate, peer, results, settle

#: How a contender opens a file: ``opener(path, mode)`` returns an async context manager.
Opener = Callable[..., Any]


def files(loop_name: str, new_loop: LoopFactory, rounds: int, lines: int, count: int, big_mib: int) -> Batches:
    """Line iteration, ``count`` small files, and large sequential reads and writes, against plain
    sync code and the installed async file libraries."""
    peers = {name: mod for name in ("aiofiles", "aiofile", "anyio") if (mod := peer(name)) is not None}
    loop = new_loop()
    try:
        with tempfile.TemporaryDirectory(prefix="ferrio-bench-") as tmp:
            text = os.path.join(tmp, "lines.txt")
            with open(text, "w") as tf:
                tf.writelines(f"{i:08d} {'x' * 60}\n" for i in range(lines))
            small = [os.path.join(tmp, f"small-{i}.bin") for i in range(count)]
            for p in small:
                with open(p, "wb") as bf:
                    bf.write(os.urandom(4096))
            big = os.path.join(tmp, "big.bin")
            with open(big, "wb") as bf:
                bf.truncate(big_mib * 2**20)

            # 1. iterate lines
            def sync_lines() -> float:
                t0 = time.perf_counter()
                with open(text) as fh:
                    for _ in fh:
                        pass
                return time.perf_counter() - t0

            @contextlib.asynccontextmanager
            async def anyio_open(path: str, mode: str = "r") -> AsyncGenerator[Any, None]:
                async with await peers["anyio"].open_file(path, mode) as fh:
                    yield fh

            openers: dict[str, Opener] = {"ferrio.open_file": ferrio.open_file}
            if "aiofiles" in peers:
                openers["aiofiles"] = peers["aiofiles"].open
            if "anyio" in peers:
                openers["anyio"] = anyio_open
            if "aiofile" in peers:
                openers["aiofile"] = peers["aiofile"].async_open

            async def timed_lines(opener: Opener) -> float:
                t0 = time.perf_counter()
                async with opener(text) as fh:
                    async for _ in fh:
                        pass
                return time.perf_counter() - t0

            def lines_with(opener: Opener) -> Callable[[], float]:
                return lambda: loop.run_until_complete(timed_lines(opener))

            runs: dict[str, Callable[[], float]] = {"plain sync": sync_lines}
            for name, opener in openers.items():
                runs[name] = lines_with(opener)
            slow = {"aiofiles", "anyio", "aiofile"}
            samples: dict[str, list[float]] = {k: [] for k in runs}
            for r in range(rounds):
                for name, fn in alternate(runs, r):
                    if name in slow and r > 0:
                        continue  # the peers take seconds per run: one round is enough to show it
                    settle()
                    samples[name].append(fn() * 1e3)
            yield results(f"iterate the lines of a {lines:,}-line file", loop_name, samples, "ms", False)

            # 2. many small files, 64 in flight; 3. read_files
            async def bounded(read_one: Callable[[str], Awaitable[bytes]]) -> float:
                sem = asyncio.Semaphore(64)

                async def one(p: str) -> None:
                    async with sem:
                        await read_one(p)

                t0 = time.perf_counter()
                await asyncio.gather(*(one(p) for p in small))
                return count / (time.perf_counter() - t0)

            def reader(opener: Opener) -> Callable[[str], Awaitable[bytes]]:
                async def read_one(p: str) -> bytes:
                    async with opener(p, "rb") as fh:
                        data: bytes = await fh.read()
                        return data

                return read_one

            def sync_loop() -> float:
                # The same result read_files() returns: every file's bytes, in a list.
                t0 = time.perf_counter()
                contents: list[bytes] = []
                for p in small:
                    with open(p, "rb") as fh:
                        contents.append(fh.read())
                return count / (time.perf_counter() - t0)

            async def with_read_files() -> float:
                t0 = time.perf_counter()
                await ferrio.read_files(small)
                return count / (time.perf_counter() - t0)

            readers = {name: reader(opener) for name, opener in openers.items()}
            each: dict[str, list[float]] = {k: [] for k in readers}
            at_once: dict[str, list[float]] = {"ferrio.read_files": [], "plain sync loop": []}
            at_once_runs: dict[str, Callable[[], float]] = {
                "ferrio.read_files": lambda: loop.run_until_complete(with_read_files()),
                "plain sync loop": sync_loop,
            }
            for r in range(rounds):
                for name, one in alternate(readers, r):
                    settle()
                    each[name].append(loop.run_until_complete(bounded(one)))
                for name, fn in alternate(at_once_runs, r):
                    settle()
                    at_once[name].append(fn())
            yield results(f"read {count:,} files of 4 KiB, 64 in flight", loop_name, each, "files/s", True) + results(
                f"read the same {count:,} files at once", loop_name, at_once, "files/s", True
            )

            # 4./5. large sequential reads and writes in 64 KiB chunks
            yield _big_file(loop, loop_name, rounds, big, os.path.join(tmp, "out.bin"), big_mib)
    finally:
        loop.close()


def _big_file(
    loop: asyncio.AbstractEventLoop, loop_name: str, rounds: int, big: str, out: str, big_mib: int
) -> list[Result]:
    """A ``big_mib`` MiB file read, and one written, in 64 KiB chunks, against plain sync code."""
    chunk = 64 * 1024
    payload = os.urandom(chunk)
    count = big_mib * 2**20 // chunk

    def sync_read() -> float:
        t0 = time.perf_counter()
        with open(big, "rb") as fh:
            while fh.read(chunk):
                pass
        return big_mib / (time.perf_counter() - t0)

    async def ferrio_read() -> float:
        t0 = time.perf_counter()
        async with ferrio.open_file(big, "rb") as fh:
            while await fh.read(chunk):
                pass
        return big_mib / (time.perf_counter() - t0)

    def sync_write() -> float:
        t0 = time.perf_counter()
        with open(out, "wb") as fh:
            for _ in range(count):
                fh.write(payload)
        return big_mib / (time.perf_counter() - t0)

    async def ferrio_write() -> float:
        t0 = time.perf_counter()
        async with ferrio.open_file(out, "wb") as fh:
            for _ in range(count):
                await fh.write(payload)
        return big_mib / (time.perf_counter() - t0)

    rs: dict[str, list[float]] = {"ferrio.open_file": [], "plain sync": []}
    ws: dict[str, list[float]] = {"ferrio.open_file": [], "plain sync": []}
    reads: dict[str, Callable[[], float]] = {
        "ferrio.open_file": lambda: loop.run_until_complete(ferrio_read()),
        "plain sync": sync_read,
    }
    writes: dict[str, Callable[[], float]] = {
        "ferrio.open_file": lambda: loop.run_until_complete(ferrio_write()),
        "plain sync": sync_write,
    }
    for r in range(rounds):
        for name, fn in alternate(reads, r):
            settle()
            rs[name].append(fn())
        for name, fn in alternate(writes, r):
            settle()
            ws[name].append(fn())
    return results(f"read a {big_mib} MiB file in 64 KiB chunks", loop_name, rs, "MiB/s", True) + results(
        f"write a {big_mib} MiB file in 64 KiB chunks", loop_name, ws, "MiB/s", True
    )
