"""Every exception class ferrio defines, and the builders of its error messages.

Each exception subclasses what callers already catch (``RuntimeError``, ``queue.Empty`` and
``asyncio.QueueEmpty``, ...). The message builders name the call, the argument, the value it got
and what to do, and never raise themselves: a broken ``__repr__`` must not hide the error being
reported. This module imports nothing else of ferrio, so every other module may import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import numbers
import queue
import sys
import threading

# NOTE: importing concurrent.futures.process here, before _threads registers its exit hook, also
# orders the hooks: threading runs them last-registered first, so ferrio's pools are waited for
# before ProcessPoolExecutors shut down, and a job running at exit can still use one
# (tests/test_lifecycle.py).
from concurrent.futures.process import BrokenProcessPool as _BrokenProcessPool
from signal import Signals
from typing import Any


class NoEventLoopError(RuntimeError):
    """There is no event loop to call into from this thread.

    Raised by :mod:`ferrio.from_thread` when called from a thread ferrio did not start (or from a
    job whose caller was sync code) without ``token=``, and by :func:`ferrio.current_token` when no
    loop is running. A :class:`RuntimeError`, as in anyio.
    """

    def __init__(self, api: str, why: str | None = None) -> None:
        super().__init__(
            why
            or f"{api} has no event loop to call into: it was called from a thread that is not running a "
            "job for an event loop. Pass token=ferrio.current_token(), taken on the loop's own thread"
        )


class QueueEmpty(asyncio.QueueEmpty, queue.Empty):
    """Raised by ``get_nowait()`` (or a timed-out ``get``) on an empty queue; both
    :exc:`asyncio.QueueEmpty` and :exc:`queue.Empty`."""


class QueueFull(asyncio.QueueFull, queue.Full):
    """Raised by ``put_nowait()`` (or a timed-out ``put``) on a full queue; both
    :exc:`asyncio.QueueFull` and :exc:`queue.Full`."""


if sys.version_info >= (3, 13):

    class QueueShutDown(asyncio.QueueShutDown, queue.ShutDown):
        """Raised by ``put`` after ``shutdown()``, and by ``get`` once a shut-down queue is empty;
        both :exc:`asyncio.QueueShutDown` and :exc:`queue.ShutDown`."""

else:

    class QueueShutDown(Exception):
        """Raised by ``put`` after ``shutdown()``, and by ``get`` once a shut-down queue is empty
        (on Python 3.13+ also :exc:`asyncio.QueueShutDown` and :exc:`queue.ShutDown`)."""


def safe_repr(obj: object, limit: int = 200) -> str:
    """``repr(obj)`` for an error message: never raises (a broken ``__repr__`` must not hide the
    error being reported: then ``<TypeName object>``), and cut short if huge."""
    try:
        text = repr(obj)
    except Exception:
        return f"<{type(obj).__qualname__} object>"
    return text if len(text) <= limit else text[:limit] + "..."


def describe(fn: object) -> str:
    """The name messages give a function: its qualified name, else :func:`safe_repr`; unquoted, so
    each message quotes it once."""
    try:
        name = getattr(fn, "__qualname__", None)
    except Exception:  # a __getattr__ that raises must not hide the real message
        name = None
    return name if isinstance(name, str) and name else safe_repr(fn)


def not_callable(api: str, obj: object, expected: str) -> TypeError:
    """The TypeError for a non-callable ``obj`` where ``api`` expected ``expected`` (such as "a
    callable as its first argument"): what it got, safely printed, and of what type; for a
    coroutine (a function called where it should have been passed), how to pass it instead."""
    if inspect.iscoroutine(obj):
        return TypeError(
            f"{api} expected {expected}, but got the coroutine {describe(obj)}() already called; pass the "
            f"function and its arguments instead: {api[:-1]}afn, *args)"
        )
    return TypeError(f"{api} expected {expected}, got {safe_repr(obj)} of type '{type(obj).__name__}'")


def check_positive_int(api: str, name: str, value: object) -> int:
    """Validates a count that must be a positive int (a worker count, a chunk size), naming the call."""
    n = _check_int(api, name, value)
    if n <= 0:
        raise ValueError(f"{api}: {name} must be greater than 0, got {n}")
    return n


def check_nonnegative_int(api: str, name: str, value: object) -> int:
    """Validates a size that may be 0 (a queue's ``maxsize``, a semaphore's ``value``), naming the call."""
    n = _check_int(api, name, value)
    if n < 0:
        raise ValueError(f"{api}: {name} must be 0 or greater, got {n}")
    return n


def _check_int(api: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{api} expected {name} to be an int, got {safe_repr(value)} of type '{type(value).__name__}'")
    return value


def check_timeout(api: str, value: object, *, name: str = "timeout") -> float | None:
    """Validates a timeout as :mod:`threading` does, with a clear message naming the call.

    ``None`` and ``math.inf`` mean no limit and give ``None``; otherwise a float in
    ``[0, threading.TIMEOUT_MAX]``. Raises TypeError for a non-number (a str, a bool), ValueError
    for NaN or a negative number, and OverflowError above ``threading.TIMEOUT_MAX``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{api} expected {name} to be a number of seconds or None, got {value!r} of type '{type(value).__name__}'"
        )
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: finite, so past TIMEOUT_MAX, not "no limit"
        seconds = -sys.float_info.max if value < 0 else sys.float_info.max
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(
            f"{api} expected {name} to be a non-negative number of seconds or None, got {_number_repr(value)}"
        )
    if seconds == math.inf:
        return None
    if seconds > threading.TIMEOUT_MAX:
        raise OverflowError(
            f"{api} got {name}={_number_repr(value)}, more than threading.TIMEOUT_MAX ({threading.TIMEOUT_MAX}); "
            "pass None or math.inf for no limit"
        )
    return seconds


def _number_repr(value: object) -> str:
    # repr() of an int past sys.get_int_max_str_digits() raises ValueError.
    if isinstance(value, int) and value.bit_length() > 256:
        return f"{'a negative' if value < 0 else 'an'} int of {value.bit_length()} bits"
    return repr(value)


# -- process pool ----------------------------------------------------------------------------------


class BrokenProcessPool(_BrokenProcessPool):
    """The pool cannot run calls any more: its initializer failed, or a worker could not start.

    A :class:`concurrent.futures.process.BrokenProcessPool`, so existing handlers catch it. The
    error that broke the pool is its ``__cause__``.
    """


class WorkerCrashed(BrokenProcessPool):
    """The worker process running a call died (a signal, ``os._exit``, the out-of-memory killer).

    Only that call fails; the pool starts a replacement worker and stays usable. It subclasses
    :class:`ferrio.BrokenProcessPool`, and so
    :class:`concurrent.futures.process.BrokenProcessPool`, so code written for
    ``ProcessPoolExecutor`` still catches it.

    Attributes:
        pid: The dead worker's process id.
        exitcode: Its exit status: negative for a signal, as in :attr:`multiprocessing.Process.exitcode`.
        signal: The :class:`signal.Signals` that killed it, or ``None`` if it exited.
        function: The qualified name of the function it was running.
    """

    pid: int
    exitcode: int | None
    signal: Signals | None
    function: str

    def __init__(self, pid: int, exitcode: int | None, function: str) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.function = function
        self.signal = None
        if exitcode is not None and exitcode < 0:
            with contextlib.suppress(ValueError):
                self.signal = Signals(-exitcode)
        if self.signal is not None:
            how = f"was killed by {self.signal.name}"
        elif exitcode is None:
            how = "died"
        else:
            how = f"exited with code {exitcode}"
        super().__init__(
            f"worker process {pid} running '{function}' {how}; a replacement worker was started "
            "and the pool's other calls are unaffected"
        )

    def __reduce__(self) -> tuple[type[WorkerCrashed], tuple[int, int | None, str]]:
        return type(self), (self.pid, self.exitcode, self.function)


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text: the ``__cause__`` of that
    exception in the parent, so a printed traceback shows where it was raised in the worker."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def with_remote_traceback(exc: BaseException, tb: str) -> BaseException:
    """Chains the text of a worker's traceback to ``exc`` as its cause; returns ``exc``."""
    exc.__cause__ = _RemoteTraceback(tb)
    return exc


# -- watchdog --------------------------------------------------------------------------------------


class PinnedClosedError(ValueError):
    """A call on a pinned object (or its :class:`~ferrio.PinnedThread`) that was closed, or that
    belongs to the parent of this forked child. A :class:`ValueError`, as aiosqlite raises for a
    closed connection, so code written for aiosqlite catches it unchanged."""


class LoopBlockedError(AssertionError):
    """A strict :func:`ferrio.watchdog` saw its loops blocked: raised as it stops.

    An ``AssertionError``, so a test that blocks its loop fails rather than errors.

    Attributes:
        reports: The :class:`ferrio.BlockReport` of each block, oldest first.
    """

    reports: tuple[Any, ...]

    def __init__(self, reports: tuple[Any, ...]) -> None:
        self.reports = reports
        longest = max((r.duration for r in reports), default=0.0)
        first = reports[0].format() if reports else "(none)"
        super().__init__(
            f"the event loop was blocked {'once' if len(reports) == 1 else f'{len(reports)} times'}, "
            f"the longest for {longest * 1e3:.0f} ms; the first block:\n{first}"
        )
