"""``ferrio.watchdog``: reports of event loops blocked by the code they run, caught while it blocks.

How it works. A watched loop runs a heartbeat on a timer every eighth of the threshold (in whole
milliseconds): a Rust call that stores the time. One Rust thread, ``ferrio-watchdog``, watches
every loop's heartbeat with the GIL released. When a beat is half a threshold late, the loop is
stuck in one iteration, so the watcher takes the GIL and samples the stack of the loop's thread
(and the task running), and samples again as the block goes on. When the late beat finally runs,
the loop reports its lag: past the threshold, and with every sample showing the same callback, it
is a block, reported off the loop (to the ``ferrio.watchdog`` logger and ``on_block``). Samples
that show different callbacks mean a loop busy with many short ones, and looks that find the loop
in its own code (``select()``) an idle loop kept from running: counted, not reported as blocks.

Nothing of the loop is patched: the heartbeat is an ordinary timer. To follow loops that stop and
start again (and, for ``start()`` outside any loop, every loop of the program) it wraps
``asyncio._set_running_loop``, which every asyncio loop calls as it starts and stops, and which
uvloop calls too if it is imported after the watchdog started (``python -m ferrio watch`` starts
it before the script runs).
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import math
import os
import sys
import threading
import traceback
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import _ferrio
from ._errors import LoopBlockedError
from ._stats import Percentiles, percentiles_of
from ._threads import ThreadPool

__all__ = ("BlockReport", "StackSample", "Watchdog", "WatchdogStatistics", "watchdog")

logger = logging.getLogger("ferrio.watchdog")

#: Samples kept per block: a longer block keeps every other one and samples half as often.
MAX_SAMPLES = 32
#: Frames kept per sample, innermost first (a deep recursion keeps its last ones).
MAX_FRAMES = 256
#: Modules whose frames run the loop rather than the code it calls back.
_LOOP_MODULES = ("asyncio.", "uvloop", "ferrio._loops", "selectors", __name__)  # this one: the heartbeat


@dataclass(frozen=True)
class StackSample:
    """The stack of the blocked loop's thread, taken while the block lasted."""

    #: How long the loop had been blocked (at least) when the stack was taken, in seconds.
    at: float
    #: The stack of the callback the loop was running (the loop's own frames left out), outermost
    #: frame first, as :func:`traceback.extract_stack` gives it.
    stack: traceback.StackSummary
    #: How long the watcher waited for the GIL to take it: long when the blocking code holds the
    #: GIL (a C call that never releases it), in which case the stack is where that code returned to.
    gil_wait: float


@dataclass(frozen=True)
class BlockReport:
    """One block of an event loop: how long, where, and by what."""

    #: How long the loop ran no timer or I/O callback, in seconds: the heartbeat's lag plus half
    #: its period, so within a sixteenth of the threshold of the block. For an ongoing report, how
    #: long so far.
    duration: float
    #: The threshold of the watchdog that reported it.
    threshold: float
    #: Whether the block was still going on when this report was made (a long block is reported
    #: as it goes, then once more when it ends).
    ongoing: bool
    #: ``repr()`` of the loop.
    loop: str
    #: The name and ``threading.get_ident()`` of the loop's thread.
    thread_name: str
    thread_id: int
    #: The task running at the first sample, its name and ``repr()``; ``None`` for a plain
    #: callback (``call_soon``, a future's done-callback).
    task_name: str | None
    task: str | None
    #: The qualified name of the task's coroutine, e.g. ``"main"``.
    coroutine: str | None
    #: ``repr()`` of the ``asyncio.Handle`` that ran, when its callback is C code with no frame
    #: of its own (``call_soon(time.sleep, 1)`` reads ``<Handle sleep(1)>``); else ``None``.
    callback: str | None
    #: The stacks taken while it lasted, first to last (at most :data:`MAX_SAMPLES`).
    samples: tuple[StackSample, ...]
    #: Whether the blocking code held the GIL (a C call that never let go of it), so no stack
    #: could be taken until it returned.
    gil_held: bool
    #: Whether it kept the GIL at all (Python code, switched out only when asked): CPU-bound
    #: work, which a thread does not take off the loop's hands; a process does.
    cpu_bound: bool

    @property
    def function(self) -> str | None:
        """The innermost function of the first sample's stack: where the loop was stuck."""
        if not self.samples or not self.samples[0].stack:
            return None
        return self.samples[0].stack[-1].name

    def format(self) -> str:
        """The report as text, its stacks formatted like a traceback."""
        what = (
            f"task {self.task_name!r} ({self.coroutine}())"
            if self.task_name
            else f"the callback {self.callback}"
            if self.callback
            else "a callback"
        )
        state = "has been blocked for" if self.ongoing else "was blocked for"
        lines = [
            f"event loop {self.loop} in thread {self.thread_name!r} {state} {format_duration(self.duration)} "
            f"(threshold {format_duration(self.threshold)}), by {what}"
        ]
        if not self.samples:
            lines.append("No stack was taken: the block ended before the watcher could sample it.")
        shown: list[str] | None = None
        same: list[str] = []
        for s in self.samples:
            body = s.stack.format()
            if body == shown:
                same.append(format_duration(s.at))
                continue
            if same:
                lines.append(f"The same stack after {', '.join(same)}.")
                same = []
            shown = body
            where = f"Stack of the callback the loop ran, after {format_duration(s.at)} of the block"
            if s.gil_wait >= self.threshold / 2:
                held = format_duration(s.gil_wait)
                where += (
                    f" (the blocking code held the GIL for {held}: this is where it returned to, "
                    "the first place a stack could be taken)"
                )
            lines.append(where + ":")
            lines.append("".join(body).rstrip("\n"))
        if same:
            lines.append(f"The same stack after {', '.join(same)}.")
        lines.append(self.advice())
        return "\n".join(lines)

    def advice(self) -> str:
        """What to do about it."""
        where = f"in {self.function}() " if self.function else ""
        if self.gil_held or self.cpu_bound:
            return (
                f"Move the CPU-bound work {where}off the loop: `await ferrio.to_process(func, *args)` "
                "(a thread would hold the GIL the loop needs)."
            )
        return f"Run the blocking call {where}off the loop: `await ferrio.to_thread(func, *args)`."

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class WatchdogStatistics:
    """What a :class:`Watchdog` has seen, from :meth:`Watchdog.statistics`."""

    #: Blocks at or past the threshold, reported.
    blocks: int
    #: Loop iterations that took the threshold or more running many short callbacks (the samples
    #: showed different ones): the loop was slow to respond, but no one callback blocked it.
    busy: int
    #: Times an idle loop could not run for the threshold or more (another thread held the GIL,
    #: or the machine gave its thread no CPU): logged, not reported as blocks of its own.
    starved: int
    #: The longest block and the sum of all blocks, in seconds.
    longest: float
    total_blocked: float
    #: Percentiles of the blocks' durations.
    durations: Percentiles
    #: Percentiles of every heartbeat's lag, on every watched loop: how late a timer runs.
    lag: Percentiles
    #: Loops watched now.
    loops: int


def format_duration(seconds: float) -> str:
    """A duration as reports print it: ``1.5 s``, ``523 ms``, ``2.5 ms``."""
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds * 1e3:.2g} ms"


def _is_loop_frame(frame: types.FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith(_LOOP_MODULES)


def _callback_root(frame: types.FrameType) -> types.FrameType:
    """The outermost frame below the loop's own: the callback the loop is running."""
    frames: list[types.FrameType] = []
    f: types.FrameType | None = frame
    while f is not None:
        frames.append(f)
        f = f.f_back
    frames.reverse()
    in_loop = False
    for f in frames:
        if _is_loop_frame(f):
            in_loop = True
        elif in_loop:
            return f
    return frames[0]


def _frames_up_to(frame: types.FrameType, root: types.FrameType) -> Iterator[tuple[types.FrameType, int]]:
    """``traceback.walk_stack(frame)``, ending at ``root``."""
    f: types.FrameType | None = frame
    while f is not None:
        yield f, f.f_lineno
        if f is root:
            return
        f = f.f_back


class _LoopWatch:
    """One loop watched by one watchdog: the handler the Rust watcher calls back."""

    def __init__(self, dog: Watchdog, loop: asyncio.AbstractEventLoop) -> None:
        self.dog = dog
        self.loop_ref = weakref.ref(loop)
        self.loop_repr = _safe_repr(loop)
        self.thread_id = threading.get_ident()
        self.thread_name = threading.current_thread().name
        self.chain = object()
        # On a loop that runs callbacks from C (uvloop), the frame that entered the loop: no loop
        # frame of Python's separates the callbacks from it. Its id, taken by every beat (it
        # lives as long as the loop runs, so the id is its own meanwhile).
        self.base_id: int | None = None
        self.core = _ferrio.LoopWatch(threshold=dog.threshold, handler=self, lag=dog._lag)
        self.half_period = self.core.period / 2
        self.samples: list[StackSample] = []
        # Per sample, beside `samples`: what ran (the task, the handle or the callback's frame),
        # the task, and the handle's repr for a C callback.
        self.keys: list[object] = []
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.callbacks: list[str | None] = []
        self.interval = dog.threshold / 2
        self.next_ongoing = max(1.0, 10 * dog.threshold)
        #: The longest GIL wait of the looks that found the loop idle, None if none did.
        self.idle_seen: float | None = None
        # Held by whoever concludes a block (the watcher thread, or the thread that stops the
        # loop or the watchdog) while it does: exactly one of them takes a block's lag, and once
        # a loop's run() returned, its blocks are in `reports`. Re-entrant: on_block, called
        # under it on the watcher thread, may stop the watchdog.
        self.lock = threading.RLock()

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts the heartbeat on ``loop``, which runs in this thread. A loop that stopped and
        runs again still holds its old heartbeat's timer: that chain ends when it fires."""
        self.thread_id = threading.get_ident()
        self.thread_name = threading.current_thread().name
        chain = self.chain = object()
        beat = self.core.beat
        call_later = loop.call_later
        getframe = sys._getframe

        def heartbeat() -> None:
            if self.chain is not chain:
                return
            period = beat()
            if period is not None:
                call_later(period, heartbeat)

        def heartbeat_from_c() -> None:
            if self.chain is not chain:
                return
            self.base_id = id(getframe(1))
            period = beat()
            if period is not None:
                call_later(period, heartbeat_from_c)

        with self.lock:
            self._reset()  # samples of a block the watcher saw but no beat concluded
        self.base_id = None if isinstance(loop, asyncio.BaseEventLoop) else _base_frame_id()
        period = self.core.arm()
        call_later(period, heartbeat if isinstance(loop, asyncio.BaseEventLoop) else heartbeat_from_c)

    # -- called by the watcher thread, with the GIL -------------------------------------------

    def _sample(self, lag: float, gil_wait: float) -> float:
        # The watcher saw `lag`, then waited for the GIL; the block began, on average, half a
        # period before the beat it delayed was due.
        lag += gil_wait + self.half_period
        with self.lock:
            next_lag, ongoing = self._take_sample(lag, gil_wait)
            if ongoing is not None:
                self.dog._deliver(ongoing)
        return next_lag - self.half_period  # the watcher compares its own, uncorrected lags

    def _take_sample(self, lag: float, gil_wait: float) -> tuple[float, BlockReport | None]:
        threshold = self.dog.threshold
        loop = self.loop_ref()
        frame = sys._current_frames().get(self.thread_id)
        if loop is None or frame is None or loop.is_closed() or not loop.is_running():
            # The loop stopped without the hook seeing it (a uvloop imported before the
            # watchdog): paused until its heartbeat runs again, which re-arms it.
            self.core.pause()
            self._reset()
            return threshold / 2, None
        handle: object = None
        if _is_loop_frame(frame):
            handle = _running_handle(frame)
            if handle is None:
                # The loop's own code is running (waiting in select(), between callbacks): a
                # block ended, and its late beat is about to run; or no callback blocked at all,
                # and the loop was kept from running (the GIL held elsewhere, no CPU for it).
                self._saw_idle(gil_wait)
                return lag + self.core.period, None
        elif id(frame) == self.base_id:
            self._saw_idle(gil_wait)  # the same, on a loop that runs from C
            return lag + self.core.period, None
        try:
            task = asyncio.current_task(loop)
        except RuntimeError:
            task = None
        root = self._root(frame)
        stack = traceback.StackSummary.extract(_frames_up_to(frame, root), limit=MAX_FRAMES, lookup_lines=False)
        stack.reverse()
        if handle is not None:
            # The C callable the handle runs, as the innermost "frame": what blocked.
            name = getattr(getattr(handle, "_callback", None), "__qualname__", None) or "<a C callable>"
            stack.append(traceback.FrameSummary("<C code>", None, name, line=""))
        self.keys.append(task if task is not None else handle if handle is not None else root)
        self.tasks.append(task)
        self.callbacks.append(_safe_repr(handle) if handle is not None else None)
        del frame, root
        self.samples.append(StackSample(at=lag, stack=stack, gil_wait=gil_wait))
        if len(self.samples) > MAX_SAMPLES:
            # Every other one, the last kept: it says what runs now.
            for name in ("samples", "keys", "tasks", "callbacks"):
                kept = getattr(self, name)
                setattr(self, name, kept[-1::-2][::-1])
            self.interval *= 2
        ongoing = None
        if lag >= self.next_ongoing and self._one_callback():
            self.next_ongoing *= 2
            ongoing = self._report(lag, 0, len(self.samples), ongoing=True)
        # Every half threshold while it lasts: a callback that blocks for the threshold amid
        # others shows in two samples or more.
        return (lag + self.interval if lag >= threshold else threshold), ongoing

    def _saw_idle(self, gil_wait: float) -> None:
        self.idle_seen = gil_wait if self.idle_seen is None else max(self.idle_seen, gil_wait)

    def _root(self, frame: types.FrameType) -> types.FrameType:
        if self.base_id is not None:
            f = frame
            while (outer := f.f_back) is not None:
                if id(outer) == self.base_id:
                    return f
                f = outer
        return _callback_root(frame)

    def _end(self) -> None:
        with self.lock:
            lag = self.core.take_ended()
            if lag is None:
                return  # a stop concluded it first
            for report in self._conclude(lag + self.half_period):
                self.dog._deliver(report)

    def _paused(self) -> None:
        """Asked by the watcher, once a second, while the loop is not running: a loop closed (or
        gone) since then has its watch closed, so the watcher thread does not outlive it."""
        loop = self.loop_ref()
        if loop is None:
            self.core.close()
        elif loop.is_closed():
            self.dog._forget_closed_loops()

    # -- called by the thread that stops the loop or the watchdog -----------------------------

    def _flush(self) -> list[BlockReport]:
        """Concludes the block in progress as the watch stops: one that just ended on the loop's
        own thread (leaving ``async with``) has run no late beat for the watcher to see. Returns
        its reports, for the caller to deliver off the loop."""
        # Bounded: the watcher may be in an on_block that waits for this very thread.
        if not self.lock.acquire(timeout=1.0):
            logger.warning("ferrio.watchdog(): a block's report is still being delivered; not waiting for it")
            return []
        try:
            lag = self.core.take_ended()
            if lag is None:
                lag = self.core.overdue()
            if lag is None or (not self.samples and lag < self.dog.threshold):
                self._reset()
                return []
            return self._conclude(lag + self.half_period)
        finally:
            self.lock.release()

    # -- shared, under the lock ---------------------------------------------------------------

    def _conclude(self, lag: float) -> list[BlockReport]:
        """Decides what a late beat of ``lag`` was: blocks (counted and kept in the dog's reports,
        and returned to be delivered), a busy loop, the GIL held elsewhere, or nothing."""
        try:
            if lag < self.dog.threshold:
                return []
            if not self.samples and self.idle_seen is not None:
                # Every look found the loop idle: nothing of its own blocked it.
                self.dog._count_starved()
                held = self.idle_seen >= self.dog.threshold / 2
                logger.warning(
                    "event loop %s in thread %r could not run for %s, though idle: %s",
                    self.loop_repr, self.thread_name, format_duration(lag),
                    f"another thread held the GIL (the watcher waited {format_duration(self.idle_seen)} for it)"
                    if held else "its thread got no CPU (a loaded machine)",
                )  # fmt: skip
                return []
            if self._one_callback():
                reports = [self._report(lag, 0, len(self.samples), ongoing=False)]
            else:
                reports = self._blocks_among_others(lag)
            if not reports:
                self.dog._count_busy()
                logger.debug("event loop %s spent %s on many short callbacks", self.loop_repr, format_duration(lag))
            for report in reports:
                self.dog._count_block(report)
            return reports
        finally:
            self._reset()

    def _blocks_among_others(self, lag: float) -> list[BlockReport]:
        """The blocks in an iteration whose samples showed several callbacks (two tasks that
        blocked one after the other, or a block amid many short callbacks): each run of samples
        of one callback, two samples or more, that lasted the threshold. A run lasted from halfway
        between its first sample and the one before (or the start) to halfway between its last and
        the one after (or the end). A callback seen once, between others, is not a block: samples
        come every half threshold, further apart when the GIL is slow to come."""
        bounds: list[tuple[int, int]] = []
        for i, key in enumerate(self.keys):
            if bounds and self.keys[bounds[-1][0]] is key:
                bounds[-1] = (bounds[-1][0], i + 1)
            else:
                bounds.append((i, i + 1))
        at = [s.at for s in self.samples]
        reports: list[BlockReport] = []
        for first, end in bounds:
            if end - first < 2:
                continue
            start = (at[first - 1] + at[first]) / 2 if first > 0 else 0.0
            stop = (at[end - 1] + at[end]) / 2 if end < len(at) else lag
            if stop - start >= self.dog.threshold:
                reports.append(self._report(stop - start, first, end, ongoing=False))
        return reports

    def _one_callback(self) -> bool:
        return all(k is self.keys[0] for k in self.keys)

    def _reset(self) -> None:
        self.samples = []
        self.keys = []
        self.tasks = []
        self.callbacks = []
        self.idle_seen = None
        self.interval = self.dog.threshold / 2
        self.next_ongoing = max(1.0, 10 * self.dog.threshold)

    def _report(self, lag: float, first: int, end: int, *, ongoing: bool) -> BlockReport:
        """The report of a block of ``lag`` seconds, from samples ``first`` to ``end``."""
        task = self.tasks[first] if first < end else None
        samples = self.samples[first:end]
        coro = task.get_coro() if task is not None else None
        loop = self.loop_ref()
        # Python code holds the GIL until the interpreter asks it to switch: waits of a few switch
        # intervals are that (more on a loaded machine: 17 ms seen), not a C call that never lets go.
        held = max(self.dog.threshold / 2, 5 * sys.getswitchinterval())
        return BlockReport(
            duration=lag,
            threshold=self.dog.threshold,
            ongoing=ongoing,
            loop=_safe_repr(loop) if loop is not None else self.loop_repr,
            thread_name=self.thread_name,
            thread_id=self.thread_id,
            task_name=task.get_name() if task is not None else None,
            task=_safe_repr(task) if task is not None else None,
            coroutine=getattr(coro, "__qualname__", None) if coro is not None else None,
            callback=self.callbacks[first] if first < end else None,
            samples=tuple(samples),
            gil_held=any(s.gil_wait >= held for s in samples),
            cpu_bound=any(s.gil_wait >= sys.getswitchinterval() / 2 for s in samples),
        )


_COROUTINE_FLAGS = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _base_frame_id() -> int | None:
    """The id of the frame that entered the running loop, found from this thread's stack: the
    caller of the outermost coroutine (a task's, run from C), or, where no coroutine runs (the
    hook, as the loop starts), the first frame outside this module: the one that called the
    loop's run method."""
    outermost_coroutine = None
    f: types.FrameType | None = sys._getframe(1)
    first_outside: types.FrameType | None = None
    while f is not None:
        if f.f_code.co_flags & _COROUTINE_FLAGS:
            outermost_coroutine = f
        elif first_outside is None and f.f_globals.get("__name__") != __name__:
            first_outside = f
        f = f.f_back
    if outermost_coroutine is not None:
        base = outermost_coroutine.f_back
        return id(base) if base is not None else None
    return id(first_outside) if first_outside is not None else None


def _running_handle(frame: types.FrameType) -> object:
    """The ``asyncio.Handle`` whose callback runs, if ``frame`` is its ``_run``: the callback is
    then C code (``call_soon(time.sleep, 1)``), with no frame of its own."""
    if frame.f_code.co_name == "_run" and frame.f_globals.get("__name__") == "asyncio.events":
        return frame.f_locals.get("self")
    return None


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception as e:  # a broken __repr__ must not stop the report
        return f"<{type(obj).__qualname__} object; repr() raised {type(e).__name__}>"


class Watchdog:
    """Watches event loops for blocks; made by :func:`ferrio.watchdog`."""

    def __init__(
        self,
        threshold: float = 0.1,
        *,
        on_block: Callable[[BlockReport], object] | None = None,
        strict: bool = False,
        log: bool = True,
    ) -> None:
        if on_block is not None and not callable(on_block):
            raise TypeError(f"ferrio.watchdog(): on_block must be a callable taking a BlockReport, got {on_block!r}")
        # Validated (and its errors worded) by the Rust side, which holds the same limits.
        self._lag = _ferrio.LatencyHistogram()
        self._threshold = _ferrio.LoopWatch(threshold=threshold, handler=self, lag=self._lag).threshold
        self.on_block = on_block
        self.strict = bool(strict)
        self.log = bool(log)
        self._mutex = threading.Lock()
        # Weak: a loop dropped unclosed is freed (its watch closes on the watcher's next check).
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatch] = weakref.WeakKeyDictionary()
        self._every_loop = False
        self._started = False
        self._reports: list[BlockReport] = []
        self._blocks = 0
        self._blocks_at_start = 0
        self._busy = 0
        self._starved = 0
        self._longest = 0.0
        self._total = 0.0
        self._durations = _ferrio.LatencyHistogram()

    @property
    def threshold(self) -> float:
        """The threshold in seconds."""
        return self._threshold

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Watchdog:
        """Starts watching: the running loop if there is one, otherwise every loop that starts
        from now on, in any thread. Returns the watchdog."""
        if self._started:
            raise RuntimeError("ferrio.watchdog().start(): this watchdog was already started; stop() it first")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._every_loop = loop is None
        self._started = True
        with self._mutex:
            self._blocks_at_start = self._blocks
        _hook.add(self)
        if loop is not None:
            try:
                self._watch(loop)
            except BaseException:
                self._started = False  # the watcher thread could not start: as if never started
                _hook.discard(self)
                self._close_watches()
                raise
        return self

    def stop(self) -> None:
        """Stops watching and ends the heartbeats (and the watcher thread, if no other watchdog
        needs it). With ``strict=True``, raises :class:`ferrio.LoopBlockedError` if a loop blocked
        since ``start()``."""
        if not self._started:
            return
        self._started = False
        _hook.discard(self)
        self._close_watches()
        with self._mutex:
            new = self._blocks - self._blocks_at_start
            reports = tuple(self._reports[-new:]) if new else ()
        if self.strict and reports:
            raise LoopBlockedError(reports)

    def _close_watches(self) -> None:
        with self._mutex:
            watches = list(self._loops.values())
            self._loops.clear()
        for w in watches:
            w.core.close()
            _deliver_later(self, w._flush())

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._stop_unless_raising(exc)

    async def __aenter__(self) -> Watchdog:
        return self.start()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self._stop_unless_raising(exc)

    def _stop_unless_raising(self, exc: BaseException | None) -> None:
        if exc is None:
            self.stop()
            return
        strict, self.strict = self.strict, False  # the body's exception is the one to see
        try:
            self.stop()
        finally:
            self.strict = strict

    # -- what it saw -------------------------------------------------------------------------

    @property
    def reports(self) -> tuple[BlockReport, ...]:
        """Every block reported so far (the last 1,000), oldest first. A block that ended as its
        loop or the watchdog stopped is in it once ``run()`` or ``stop()`` has returned."""
        with self._mutex:
            return tuple(self._reports)

    def statistics(self) -> WatchdogStatistics:
        """A snapshot of what it has seen."""
        with self._mutex:
            return WatchdogStatistics(
                blocks=self._blocks,
                busy=self._busy,
                starved=self._starved,
                longest=self._longest,
                total_blocked=self._total,
                durations=percentiles_of(self._durations.percentiles()),
                lag=percentiles_of(self._lag.percentiles()),
                loops=sum(1 for loop in self._loops if not loop.is_closed()),
            )

    # -- called by the hook and the watcher ----------------------------------------------------

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._mutex:
            w = self._loops.get(loop)
            if w is None:
                w = self._loops[loop] = _LoopWatch(self, loop)
        try:
            w.arm(loop)
        except BaseException:
            with self._mutex:
                self._loops.pop(loop, None)
            w.core.close()
            raise

    def _loop_started(self, loop: asyncio.AbstractEventLoop) -> None:
        self._forget_closed_loops()
        if self._every_loop or loop in self._loops:
            self._watch(loop)

    def _loop_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        w = self._loops.get(loop)
        if w is not None:
            # The loop's last callback may have blocked: concluded now, as the loop stops, so
            # its report is in `reports` when run() returns; delivered off this thread.
            _deliver_later(self, w._flush())
            w.core.pause()
        self._forget_closed_loops()

    def _forget_closed_loops(self) -> None:
        """Closes the watches of closed loops (kept paused until then: ``asyncio.run`` starts and
        stops its loop three times)."""
        with self._mutex:
            gone = [loop for loop in self._loops if loop.is_closed()]
            watches = [self._loops.pop(loop) for loop in gone]
        for w in watches:
            w.core.close()

    def _count_block(self, report: BlockReport) -> None:
        with self._mutex:
            self._blocks += 1
            self._longest = max(self._longest, report.duration)
            self._total += report.duration
            self._durations.record(report.duration)
            self._reports.append(report)
            del self._reports[:-1000]

    def _count_busy(self) -> None:
        with self._mutex:
            self._busy += 1

    def _count_starved(self) -> None:
        with self._mutex:
            self._starved += 1

    def _deliver(self, report: BlockReport) -> None:
        """Logs the report and passes it to ``on_block``, on the calling thread."""
        if self.log:
            logger.warning("%s", report.format())
        if self.on_block is not None:
            try:
                self.on_block(report)
            except Exception:
                logger.exception("ferrio.watchdog(): on_block %r raised", self.on_block)

    def _after_fork_in_child(self) -> None:
        # A parent thread (the watcher) may have held these locks at the fork: new ones. The
        # parent's watches, and whatever they were in the middle of, are the parent's.
        self._mutex = threading.Lock()
        watches = list(self._loops.values())
        self._loops.clear()
        for w in watches:
            w.lock = threading.RLock()
            w.core.close()


_delivery: ThreadPool | None = None


def _deliver_later(dog: Watchdog, reports: list[BlockReport]) -> None:
    """Delivers a report concluded by a stop: on this thread, unless it runs an event loop
    (leaving ``async with`` inside it), which must not wait for logging and ``on_block``; then on
    one thread of its own, in order (or here after all, once pools take no work: at exit)."""
    global _delivery
    for report in reports:
        if asyncio._get_running_loop() is None:
            dog._deliver(report)
            continue
        try:
            if _delivery is None:
                _delivery = ThreadPool(1, thread_name_prefix="ferrio-watchdog-report", idle_timeout=1.0)
            _delivery.submit(dog._deliver, report)
        except RuntimeError:
            dog._deliver(report)


class _RunningLoopHook:
    """Wraps ``asyncio._set_running_loop`` while any watchdog runs, to see loops start and stop."""

    def __init__(self) -> None:
        # Strong: a started watchdog runs until stopped, referenced or not (`watchdog().start()`).
        self.dogs: set[Watchdog] = set()
        self.original: Callable[[asyncio.AbstractEventLoop | None], None] | None = None
        self.running = threading.local()
        # A forked child runs asyncio's own at-fork hook (3.12+: it clears the running loop)
        # before ferrio's renews the watchdogs: until then, loops are the parent's business.
        self.pid = os.getpid()

    def add(self, dog: Watchdog) -> None:
        self.dogs.add(dog)
        if self.original is None:
            self.original = asyncio.events._set_running_loop
            asyncio.events._set_running_loop = asyncio._set_running_loop = self.set_running_loop

    def discard(self, dog: Watchdog) -> None:
        self.dogs.discard(dog)
        # If someone wrapped it after us, we stay in place, with nothing to do.
        if not self.dogs and self.original is not None and asyncio.events._set_running_loop is self.set_running_loop:
            asyncio.events._set_running_loop = asyncio._set_running_loop = self.original
            self.original = None

    def set_running_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        original = self.original or _original_set_running_loop
        original(loop)
        if not self.dogs or os.getpid() != self.pid:
            return
        if loop is not None:
            self.running.loop = loop
            for dog in list(self.dogs):
                self._notify(dog._loop_started, loop)
        else:
            stopped = getattr(self.running, "loop", None)
            self.running.loop = None
            if stopped is not None:
                for dog in list(self.dogs):
                    self._notify(dog._loop_stopped, stopped)

    @staticmethod
    def _notify(event: Callable[[asyncio.AbstractEventLoop], None], loop: asyncio.AbstractEventLoop) -> None:
        # Inside asyncio's own start and stop of the loop: a failure (the watcher thread could not
        # start, under a memory limit) leaves that loop unwatched and is logged, never raised there.
        try:
            event(loop)
        except Exception:
            logger.exception("ferrio.watchdog() could not watch event loop %s", _safe_repr(loop))


_original_set_running_loop = asyncio.events._set_running_loop
_hook = _RunningLoopHook()


def _stop_all() -> None:
    for dog in list(_hook.dogs):
        dog.strict = False
        dog.stop()
    # Not bounded: the watcher may be running an on_block, Python code that must be out of the
    # interpreter before it finalizes (as threading waits for its non-daemon threads).
    if not _ferrio.watchdog_wait_stopped(1.0):
        logger.warning("ferrio.watchdog(): waiting at exit for an on_block callback to return")
        _ferrio.watchdog_wait_stopped(math.inf)


def _after_fork_in_child() -> None:
    _hook.pid = os.getpid()
    for dog in list(_hook.dogs):
        dog._after_fork_in_child()


atexit.register(_stop_all)
os.register_at_fork(after_in_child=_after_fork_in_child)


def watchdog(
    threshold: float = 0.1,
    *,
    on_block: Callable[[BlockReport], object] | None = None,
    strict: bool = False,
    log: bool = True,
) -> Watchdog:
    """A watchdog for blocked event loops: reports every block of ``threshold`` seconds or more,
    with the stack of the code that blocked, taken while it blocked.

    ::

        async with ferrio.watchdog(threshold=0.1) as dog:   # the running loop
            ...
        dog.statistics()

        ferrio.watchdog(0.05).start()                       # every loop started from now on

    ``threshold`` is in seconds, from 0.01 to 86400. Reports go to the ``ferrio.watchdog`` logger
    (unless ``log=False``), to ``dog.reports`` and to ``on_block(report)``, which never runs on a
    running loop's thread (on the watcher thread, or on a thread of its own for a block concluded
    by a stop inside a loop). With ``strict=True``, ``stop()`` (and leaving the ``with`` block)
    raises :class:`ferrio.LoopBlockedError` if a loop blocked since ``start()``.

    Raises:
        ValueError: ``threshold`` is not finite or outside 0.01-86400.
        TypeError: ``threshold`` is not a number, or ``on_block`` not callable.
    """
    return Watchdog(threshold, on_block=on_block, strict=strict, log=log)
