"""Calls between sync code, worker threads and an event loop keep the callee's types."""

from __future__ import annotations

import ferrio
from typing_extensions import assert_type


async def fetch(n: int) -> str:
    return str(n)


def double(n: int) -> int:
    return n * 2


@ferrio.syncify
async def ping(host: str, *, port: int = 80) -> float:
    return float(len(host) + port)


def in_a_worker_thread() -> None:
    assert_type(ferrio.from_thread.run(fetch, 4), str)
    assert_type(ferrio.from_thread.run_sync(double, 4), int)


def main() -> None:
    assert_type(ping("example.org", port=443), float)
    with ferrio.start_blocking_portal() as portal:
        assert_type(portal.call(fetch, 4), str)
        assert_type(portal.call(double, 4), int)
        assert_type(portal.submit(fetch, 4).result(), str)
    assert_type(ferrio.run(fetch(1)), str)
