"""ferrio: sync and async Python, bridged by a Rust core.

::

    data = await ferrio.to_thread(blocking_io, "a.txt")     # asyncio.to_thread, on a Rust pool
"""

import importlib.metadata as _metadata

from . import _ferrio, from_thread
from ._errors import (
    BrokenProcessPool,
    LoopBlockedError,
    NoEventLoopError,
    PinnedClosedError,
    QueueEmpty,
    QueueFull,
    QueueShutDown,
    WorkerCrashed,
)
from ._files import AsyncFile, Path, open_file, read_files
from ._limiter import CapacityLimiter
from ._loops import EventLoopToken, current_token, run, syncify
from ._pinned import Pinned, PinnedAttribute, PinnedThread, SyncPinned, pinned
from ._portal import BlockingPortal, start_blocking_portal
from ._process import ProcessPool, default_process_pool, to_process
from ._public import fixup_module_metadata as _fixup_module_metadata
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
    QueueStatistics,
    Semaphore,
)
from ._threads import ThreadPool, asyncify, check_cancelled, default_pool, is_cancelled, to_thread
from ._watchdog import BlockReport, StackSample, Watchdog, WatchdogStatistics, watchdog

__version__: str = _ferrio.__version__


def _check_installed_version() -> None:
    try:
        installed = _metadata.version("ferrio")
    except _metadata.PackageNotFoundError:  # running from a source tree with only the extension built
        return
    if installed != __version__:
        raise ImportError(
            f"ferrio's Python package is version {installed} but its compiled module ferrio._ferrio is "
            f"version {__version__}; reinstall ferrio (pip install --force-reinstall ferrio) so they match"
        )


_check_installed_version()

__all__ = (
    "AsyncFile",
    "AtomicInt",
    "BlockReport",
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
    "LoopBlockedError",
    "NoEventLoopError",
    "Path",
    "Percentiles",
    "Pinned",
    "PinnedAttribute",
    "PinnedClosedError",
    "PinnedThread",
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
    "StackSample",
    "SyncPinned",
    "ThreadPool",
    "Watchdog",
    "WatchdogStatistics",
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
    "pinned",
    "read_files",
    "run",
    "start_blocking_portal",
    "syncify",
    "to_process",
    "to_thread",
    "watchdog",
)


_fixup_module_metadata("ferrio", globals(), __all__)
