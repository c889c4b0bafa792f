"""Files are typed by their mode, as the builtin open()'s are: str for text, bytes for binary."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ferrio
from typing_extensions import assert_type


async def readme_example() -> None:
    # The README's file example, as a user writes it (with a path from mkdtemp(): mktemp() is
    # deprecated, and the checkers say so).
    path = os.path.join(tempfile.mkdtemp(), "example.txt")
    async with ferrio.open_file(path, "w", encoding="utf-8") as f:
        assert_type(f, ferrio.AsyncFile[str])
        assert_type(await f.write("hello\nworld\n"), int)
    async with ferrio.open_file(path, encoding="utf-8") as f:
        async for line in f:
            assert_type(line, str)
            print(line.strip())
    assert_type(await ferrio.Path(path).read_text(), str)
    assert_type(await ferrio.read_files([path]), list[bytes])


async def binary(path: str) -> bytes:
    f = await ferrio.open_file(path, "rb")
    assert_type(f, ferrio.AsyncFile[bytes])
    head = await f.read(4)
    assert_type(head, bytes)
    async for line in f:
        assert_type(line, bytes)
    assert_type(await f.readline(), bytes)
    assert_type(await f.readlines(), list[bytes])
    assert_type(await f.seek(0), int)
    assert_type(await f.tell(), int)
    await f.close()
    async with ferrio.open_file(path, "ab", buffering=0) as out:
        assert_type(await out.write(b"x"), int | None)  # buffering=0: os.write's count, or None
        await out.write(bytearray(b"y"))  # any bytes-like object, as the builtin takes
        await out.writelines([b"a", b"b"])
    return head


async def text_modes(path: str) -> None:
    async with ferrio.open_file(path, "r+", encoding="utf-8", newline="") as f:
        assert_type(await f.read(), str)
        assert_type(await f.readline(5), str)
        await f.writelines(["a\n", "b\n"])
    async with ferrio.Path(path).open("rb") as g:
        assert_type(await g.read(), bytes)
    async with ferrio.Path(path).open() as h:
        assert_type(await h.read(), str)


async def mode_known_only_at_run_time(path: str, mode: str) -> None:
    # A mode the checker cannot read gives what the builtin's open() gives: Any.
    async with ferrio.open_file(path, mode) as f:
        assert_type(f, ferrio.AsyncFile[Any])


async def wrong_types(path: str) -> None:
    async with ferrio.open_file(path, "w", encoding="utf-8") as f:
        await f.write(b"bytes")  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    async with ferrio.open_file(path, "wb") as g:
        await g.write("text")  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
