"""Reading and writing files from async code without blocking the event loop.

Calling open() inside a coroutine blocks the loop; sending each read through run_in_executor
costs a thread hand-off per call. Here, with ``ferrio.open_file``, the loop keeps ticking (a
heartbeat counts it) while a file is written and read back line by line, and a batch of files is
read at once in Rust with ``ferrio.read_files``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import ferrio


async def main() -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.ensure_future(heartbeat())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file.txt"
        async with ferrio.open_file(path, "w", encoding="utf-8") as f:
            for i in range(1_000):
                await f.write(f"line {i}\n")  # gathered and written in batches
        async with ferrio.open_file(path, encoding="utf-8") as f:
            lines = [line async for line in f]  # about 64 KiB of lines per hop
        text = await ferrio.Path(path).read_text(encoding="utf-8")
        blobs = await ferrio.read_files([path, path])  # in parallel, in Rust, GIL released
    beat.cancel()
    print("lines", len(lines), lines[0].strip(), lines[-1].strip())
    print("same as read_text", "".join(lines) == text)
    print("read_files", [len(b) for b in blobs])
    print("loop kept ticking", ticks > 0)


if __name__ == "__main__":
    asyncio.run(main())
