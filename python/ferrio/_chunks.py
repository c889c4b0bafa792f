"""The ordered, bounded, adaptively chunked map behind ``ThreadPool.amap`` and ``ProcessPool.amap``."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from ._errors import safe_repr

#: What a pool's ``submit(chunk)`` returns: an awaitable of ``(results, error or None)`` (the
#: results before the first error), and a function that cancels the chunk.
Submitted = tuple[Awaitable[tuple[list[Any], Any]], Callable[[], object]]


def ordered_map(
    iterable: Iterable[Any],
    submit: Callable[[tuple[Any, ...]], Submitted],
    *,
    window: int,
    chunksize: int | None,
    seconds_per_chunk: float,
    to_exception: Callable[[Any], BaseException] = lambda e: e,
    api: str = "amap()",
) -> AsyncIterator[Any]:
    """Yields the results of ``iterable``'s items in order, submitting at most ``window`` chunks
    ahead of what was yielded.

    Unless ``chunksize`` is fixed, a chunk grows (4x at most per step, up to 4096 items) until it
    takes about ``seconds_per_chunk`` from submission to result, an upper bound of its work. The
    error of a chunk is raised after the results before it; leaving early cancels what is pending.

    Raises:
        TypeError: ``iterable`` is not iterable; raised here, at the call (``api`` names it),
            not at the first ``async for`` step.
    """
    try:
        items = iter(iterable)
    except TypeError:
        raise TypeError(
            f"{api} expected an iterable as its second argument, got {safe_repr(iterable)} "
            f"of type '{type(iterable).__name__}'"
        ) from None
    return _ordered_map(items, submit, window, chunksize, seconds_per_chunk, to_exception)


async def _ordered_map(
    items: Iterator[Any],
    submit: Callable[[tuple[Any, ...]], Submitted],
    window: int,
    chunksize: int | None,
    seconds_per_chunk: float,
    to_exception: Callable[[Any], BaseException],
) -> AsyncIterator[Any]:
    size = chunksize or 1
    pending: deque[tuple[Submitted, int, float]] = deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                chunk = tuple(itertools.islice(items, size))
                if not chunk:
                    exhausted = True
                    break
                pending.append((submit(chunk), len(chunk), time.perf_counter()))
            if not pending:
                return
            (result, _), n, sent = pending.popleft()
            results, error = await result
            if chunksize is None and error is None:
                per_item = max((time.perf_counter() - sent) / n, 1e-7)
                size = max(1, min(4096, int(seconds_per_chunk / per_item), size * 4))
            for r in results:
                yield r
            if error is not None:
                raise to_exception(error)
    finally:
        for (_, cancel), _, _ in pending:
            cancel()
