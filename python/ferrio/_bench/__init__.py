"""The side-by-side benchmark behind ``python -m ferrio bench``: ferrio against the stdlib and
the peers, in one process, one module per workload family.

Each workload runs every contender once per round, rounds interleaved so drift on a noisy
machine hits everyone alike, and reports the median round. Every contender's throughput is
measured inside one running loop (never ``asyncio.run`` per iteration, which would time loop
start-up). The *ceiling* contender awaits futures the loop resolves itself
(``loop.call_soon(fut.set_result, x)``): the most any offload can reach through asyncio's own
tasks and futures.

- ``_harness``: the result record, the peers, and the timing harnesses every family uses
- ``_threads``, ``_bridges``, ``_sync``, ``_processes``, ``_files``, ``_watchdog``: the workload families
- ``_report``: the text report; ``_cli``: the ``bench`` command and the run
"""

from __future__ import annotations

from ._cli import add_parser, run

__all__ = ("add_parser", "run")
