"""ferrio: sync and async Python, bridged by a Rust core.

::

    data = await ferrio.to_thread(blocking_io, "a.txt")     # asyncio.to_thread, on a Rust pool
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import (
    _ferrio,
    from_thread,
)
from ._errors import NoEventLoopError
from ._files import AsyncFile, Path, open_file, read_files
from ._limiter import CapacityLimiter
from ._loops import EventLoopToken, current_token, run, syncify
from ._portal import BlockingPortal, start_blocking_portal
from ._process import (
    BrokenProcessPool,
    ProcessPool,
    WorkerCrashed,
    default_process_pool,
    to_process,
)
from ._shared import SharedCounter, SharedValue
from ._stats import LimiterStatistics, Percentiles, PoolStatistics, ProcessPoolStatistics
from ._sync import (
    AtomicInt,
    BoundedSemaphore,
    Condition,
    Event,
    LifoQueue,
    Lock,
    LockStatistics,
    PriorityQueue,
    Queue,
    QueueEmpty,
    QueueFull,
    QueueShutDown,
    QueueStatistics,
    Semaphore,
)
from ._threads import ThreadPool, asyncify, check_cancelled, default_pool, is_cancelled, to_thread

__version__: str = _ferrio.__version__

try:
    _installed = version("ferrio")
except PackageNotFoundError:  # running from a source tree with only the extension built
    _installed = __version__
if _installed != __version__:
    raise ImportError(
        f"ferrio's Python package is version {_installed} but its compiled module ferrio._ferrio is "
        f"version {__version__}; reinstall ferrio (pip install --force-reinstall ferrio) so they match"
    )

__all__ = (
    "AsyncFile",
    "AtomicInt",
    "BlockingPortal",
    "BoundedSemaphore",
    "BrokenProcessPool",
    "CapacityLimiter",
    "Condition",
    "Event",
    "EventLoopToken",
    "LifoQueue",
    "LimiterStatistics",
    "Lock",
    "LockStatistics",
    "NoEventLoopError",
    "Path",
    "Percentiles",
    "PoolStatistics",
    "PriorityQueue",
    "ProcessPool",
    "ProcessPoolStatistics",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "QueueShutDown",
    "QueueStatistics",
    "Semaphore",
    "SharedCounter",
    "SharedValue",
    "ThreadPool",
    "WorkerCrashed",
    "__version__",
    "asyncify",
    "check_cancelled",
    "current_token",
    "default_pool",
    "default_process_pool",
    "from_thread",
    "is_cancelled",
    "open_file",
    "read_files",
    "run",
    "start_blocking_portal",
    "syncify",
    "to_process",
    "to_thread",
)
