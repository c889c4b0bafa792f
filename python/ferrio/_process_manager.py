"""The engine of a :class:`ferrio.ProcessPool`: its manager thread, its workers and their sockets.

Each worker is a process (see :mod:`ferrio._process_forkserver`) joined to the pool by its own
Unix socket (see :mod:`ferrio._wire`). A call, pickled on the caller's thread, becomes a
:class:`Task` given to an idle worker (or, pipelined, to a busy one) under the pool's lock; calls
that find no worker wait in a queue. One manager thread per pool watches every worker's socket
and process sentinel with one ``select``: it hands the next queued call to a worker the moment its
result arrives, delivers results to event loops in batches (one wake-up per loop per batch),
starts and replaces workers, and kills those that run past a ``timeout=``. A worker that dies
fails only the call it was running.

Only the manager writes to workers' sockets, and never waits to: the sockets are non-blocking,
each worker's frames wait in its channel's queue, and the ``select`` watches for writability
while frames wait. So the caller's thread (often an event loop) never waits on a socket, and the
manager always gets back to reading results: a worker blocked writing a result to a full socket
is always drained, so the two cannot deadlock writing to each other. The manager survives any
one bad event: a worker that cannot be started fails the call it was for; a frame it cannot
handle kills that worker, whose call fails with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import multiprocessing.process
import os
import selectors
import signal
import socket
import threading
import time
import traceback
import weakref
from collections import deque
from multiprocessing.process import BaseProcess
from typing import Any

from . import _ferrio, _process_worker, _wire
from ._errors import BrokenProcessPool, WorkerCrashed, with_remote_traceback
from ._process_forkserver import StartContext, replace_dead_forkserver, reserve_descriptors
from ._stats import ProcessPoolStatistics, percentiles_of

# -- the pool's state, shared with its manager thread ----------------------------------------------

_QUEUED, _SENT, _RUNNING, _DONE = 0, 1, 2, 3
#: Calls a busy worker holds at once: the one it runs and the next, already in its socket, so
#: short calls run back to back instead of waiting a round trip through the manager each. Only
#: when every worker is up and busy and recent calls were short: a call queued behind a long one
#: would wait for it while another worker may free up first.
#: The worker relies on it being 2 (see _wire.AHEAD): a pipelined call has one call ahead of it.
_PIPELINE = 2
_PIPELINE_BELOW = 1e-3  # seconds: the running average of call times under which pipelining pays
#: Workers in a row that crashed by a fault of their own (SIGSEGV, SIGABRT...) before they were
#: ready: a crash at start-up that repeats, so the pool gives up.
_EARLY_CRASHES = 3
#: Workers in a row killed from outside (SIGKILL, SIGTERM...) before they were ready. Each is
#: replaced: an out-of-memory killer under load picks new workers too. Only this many in a row
#: (something kills every worker as it starts, say an initializer that always runs out of
#: memory) breaks the pool, so the calls fail instead of waiting for a worker forever.
_EARLY_KILLS = 25
#: Signals a process gets from its own faults; any other killed it from outside.
_FAULT_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGSYS", "SIGTRAP", "SIGXCPU", "SIGXFSZ")
    if hasattr(signal, name)
)
#: The longest the manager's select waits at once (epoll takes at most about 24 days); a
#: deadline further away is simply waited for in several steps.
_MAX_WAIT = 3600.0
_STARTING, _IDLE, _BUSY, _RETIRING = 0, 1, 2, 3


class Task:
    __slots__ = (
        "afut",
        "ahead",
        "cf",
        "deadline",
        "kill_on_cancel",
        "name",
        "pickled",
        "started",
        "state",
        "submitted",
        "tid",
        "timed_out",
        "timeout",
        "waker",
        "worker",
    )

    def __init__(self, tid: int, name: str, pickled: _wire.Pickled, timeout: float | None) -> None:
        self.tid = tid
        self.name = name
        self.pickled = pickled
        self.timeout = timeout
        self.deadline = 0.0
        self.state = _QUEUED
        self.ahead = False  # given to a worker with a call ahead of it (pipelined)
        self.timed_out = False
        self.kill_on_cancel = False
        self.worker: _Worker | None = None
        self.cf: concurrent.futures.Future[Any] | None = None
        self.afut: asyncio.Future[Any] | None = None
        self.waker: _ferrio.LoopWaker | None = None  # set with afut
        self.submitted = time.perf_counter()
        self.started = 0.0

    def release(self) -> None:
        self.pickled.close()


class _Worker:
    __slots__ = ("buffered", "chan", "dirty", "eof", "events", "failure", "outbox", "pid", "proc", "state", "tasks")

    def __init__(self, proc: BaseProcess, pid: int, chan: _wire.Channel) -> None:
        self.proc = proc
        self.pid = pid
        self.chan = chan
        self.state = _STARTING
        # Calls sent to it, in the order it runs them: the first runs, the rest wait in its socket.
        self.tasks: deque[Task] = deque()
        # Calls (None: EXIT) given to it under the pool's lock and not queued on its channel yet;
        # the manager moves them there, in order, outside the lock. `dirty`: it is in Core.dirty.
        self.outbox: deque[Task | None] = deque()
        self.dirty = False
        # Manager thread only. The task id of the last frame queued with buffers in our arena
        # and not answered yet (0: INIT), or None: while set, a frame with buffers takes a
        # fresh arena, as the worker may not have read the last one's.
        self.buffered: int | None = None
        self.events = selectors.EVENT_READ  # what the selector watches its socket for
        self.eof = False  # its socket reached end of stream and left the selector
        self.failure: BaseException | None = None  # why the manager killed it, if it did


class Core:
    """Everything a pool's manager thread touches; the :class:`ProcessPool` only holds it, so a
    pool nobody references is collected and shuts down."""

    def __init__(
        self,
        max_workers: int,
        ctx: StartContext,
        name: str,
        init: _wire.Pickled,
        max_tasks_per_child: int | None,
    ) -> None:
        self.max_workers = max_workers
        self.ctx = ctx
        self.name = name
        self.init = init
        self.max_tasks_per_child = max_tasks_per_child
        self.lock = threading.Lock()
        self.queue: deque[Task] = deque()
        self.idle: list[_Worker] = []
        self.workers: dict[int, _Worker] = {}  # by pid
        self.timeouts: list[tuple[float, int, Task]] = []
        self.closed = False  # no new calls
        self.forked = False  # this is a forked child's copy of the parent's pool
        self.stopping = False  # interpreter exit: cancel what is queued, kill what runs
        self.broken: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.dirty: list[_Worker] = []  # workers with something in their outbox
        # A worker could not be started (EMFILE, say) while others run: start no more until a
        # call is submitted or a worker exits, instead of failing again at once, step after step.
        self.hold_growth = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.wake_pending = False
        self.ids = itertools.count(1)
        self.numbers = itertools.count(1)
        self.n_queued = 0
        self.n_sent = 0  # sent to a busy worker, not started yet
        self.n_running = 0
        self.deficit = 0  # workers that died or retired and are to be replaced
        self.n_starting = 0  # workers started and not ready yet
        # Workers in a row that died before they were ready: all, by their own fault, killed from outside.
        self.early_deaths = self.early_crashes = self.early_kills = 0
        self.avg_run = 1.0  # running average of call times, seconds (assumed long until seen)
        self.completed = self.failed = self.cancelled = self.crashed = self.timed_out = self.started = 0
        self.queue_wait = _ferrio.LatencyHistogram()
        self.run_time = _ferrio.LatencyHistogram()
        _cores.add(self)

    # -- any thread ----------------------------------------------------------------------------

    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self.wake_w, b"x")

    def submit(self, api: str, task: Task) -> None:
        with self.lock:
            if self.closed or self.broken is not None:
                task.release()
                if self.broken is not None:
                    raise BrokenProcessPool(
                        f"{api} cannot run calls on a broken pool: {self.broken}; create a new pool"
                    ) from self.broken
                if self.forked:
                    raise RuntimeError(
                        f"{api} cannot use a pool created in the parent process before os.fork(); "
                        "create a new pool in the child"
                    )
                raise RuntimeError(f"{api} cannot schedule new work after the pool was shut down; create a new pool")
            self.hold_growth = False  # a new call: try to grow again
            if self.thread is None:
                try:  # here, not in the thread: a shortage of descriptors fails this call, not the pool
                    sel = selectors.DefaultSelector()
                except OSError as e:
                    task.release()
                    raise OSError(
                        e.errno,
                        f"{api} could not start the pool's manager thread: {e.strerror or e}; the pool stays "
                        "usable, and the call may be retried once the system has resources again",
                    ) from e
                thread = threading.Thread(target=self._manage, args=(sel,), name=f"{self.name}-manager", daemon=True)
                try:
                    sel.register(self.wake_r, selectors.EVENT_READ, None)
                    thread.start()
                except BaseException:  # at interpreter shutdown, say: nothing was queued
                    sel.close()
                    task.release()
                    raise
                self.thread = thread
            worker = None
            if not self.queue:
                if self.idle:
                    worker = self.idle.pop()
                elif self._pipelining():
                    worker = self._pipeline_with_room()
            if worker is not None:
                if task.cf is not None:
                    task.cf.set_running_or_notify_cancel()  # just made, so not cancelled
                self._send(worker, task)
            else:
                self.queue.append(task)
                self.n_queued += 1
            wake = worker is not None or len(self.workers) < self.max_workers or task.timeout is not None
        if wake:  # the manager writes the call to the worker's socket, or starts a worker for it
            self.wake()

    def cancel(self, task: Task, kill: bool) -> None:
        """The caller stopped waiting: drop a queued call, kill the worker of a running one if asked.

        A call already in a busy worker's socket cannot be taken back: it runs, and its result is
        dropped."""
        with self.lock:
            if task.state == _QUEUED:
                task.state = _DONE  # left in the queue; the dispatcher skips it
                self.n_queued -= 1
                self.cancelled += 1
                task.release()
            elif task.state == _SENT:
                task.state = _DONE
                self.n_sent -= 1
                self.cancelled += 1
            elif task.state == _RUNNING and kill and task.worker is not None:
                task.state = _DONE
                self.n_running -= 1
                self.cancelled += 1
                self._kill(task.worker)

    def close(self, cancel_futures: bool, stop: bool = False) -> None:
        dropped: list[Task] = []
        with self.lock:
            self.closed = True
            if stop:
                self.stopping = True
            if cancel_futures or stop:
                dropped = [t for t in self.queue if t.state == _QUEUED]
                self.queue.clear()
                for t in dropped:
                    t.state = _DONE
                    t.release()
                self.n_queued = 0
                self.cancelled += len(dropped)
            if stop:
                for w in self.workers.values():
                    if w.state != _IDLE:
                        self._kill(w)
            running = self.thread is not None
        for t in dropped:
            _cancel(t)
        if running:
            self.wake()
        else:
            self._close_fds()

    # -- introspection, from any thread ----------------------------------------------------------

    def statistics(self) -> ProcessPoolStatistics:
        with self.lock:
            return ProcessPoolStatistics(
                max_workers=self.max_workers,
                workers_alive=len(self.workers),
                workers_idle=len(self.idle),
                queued=self.n_queued + self.n_sent,
                running=self.n_running,
                completed=self.completed,
                failed=self.failed,
                cancelled=self.cancelled,
                crashed=self.crashed,
                timed_out=self.timed_out,
                workers_started=self.started,
                queue_wait=percentiles_of(self.queue_wait.percentiles()),
                run_time=percentiles_of(self.run_time.percentiles()),
            )

    def worker_pids(self) -> list[int]:
        with self.lock:
            return list(self.workers)

    # -- under self.lock -----------------------------------------------------------------------

    def _pipelining(self) -> bool:
        return (
            self.avg_run < _PIPELINE_BELOW
            and self.n_starting == 0
            and not self.idle
            and len(self.workers) == self.max_workers
        )

    def _pipeline_with_room(self) -> _Worker | None:
        best = None
        for w in self.workers.values():
            if w.state == _BUSY and len(w.tasks) < _PIPELINE and (best is None or len(w.tasks) < len(best.tasks)):
                best = w
        return best

    def _send(self, worker: _Worker, task: Task) -> None:
        """Sends a call to a worker: idle, busy with room in its pipeline, or starting (the call
        then waits in its socket behind INIT and starts when the worker says it is ready)."""
        if worker.state != _STARTING:
            worker.state = _BUSY
        worker.tasks.append(task)
        task.worker = worker
        task.state = _SENT
        task.ahead = len(worker.tasks) > 1
        self.n_sent += 1
        self._post(worker, task)
        if len(worker.tasks) == 1 and worker.state != _STARTING:
            self._start(task)

    def _post(self, worker: _Worker, task: Task | None) -> None:
        """Leaves a call (None: EXIT) for the manager to write to the worker's socket."""
        worker.outbox.append(task)
        if not worker.dirty:
            worker.dirty = True
            self.dirty.append(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.state = _RETIRING
        self._post(worker, None)

    def _start(self, task: Task) -> None:
        """A call reached the head of its worker's pipeline: it runs now."""
        if task.state != _SENT:
            return  # cancelled while it waited: it runs anyway, unobserved
        task.state = _RUNNING
        self.n_sent -= 1
        self.n_running += 1
        task.started = time.perf_counter()
        self.queue_wait.record(task.started - task.submitted)
        if task.timeout is not None:
            task.deadline = time.monotonic() + task.timeout
            timeouts = self.timeouts
            if len(timeouts) > 64 and len(timeouts) > 4 * self.n_running:
                # Calls that finished before their deadline stay in the heap until it passes:
                # drop them now and then, so long timeouts on many calls do not pile up.
                timeouts[:] = [e for e in timeouts if e[2].state == _RUNNING]
                heapq.heapify(timeouts)
            heapq.heappush(timeouts, (task.deadline, task.tid, task))
            self.wake()

    def _next_task(self) -> Task | None:
        while self.queue:
            task = self.queue.popleft()
            if task.state != _QUEUED:
                continue
            self.n_queued -= 1
            if task.cf is not None and not task.cf.running() and not task.cf.set_running_or_notify_cancel():
                task.state = _DONE
                self.cancelled += 1
                task.release()
                continue
            if task.afut is not None and task.afut.done():  # cancelled; its loop has not told us yet
                task.state = _DONE
                self.cancelled += 1
                task.release()
                continue
            return task
        return None

    def _kill(self, worker: _Worker) -> None:
        if self.workers.get(worker.pid) is not worker:  # reaped (or being reaped): its pid may be reused
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    def _finish(self, task: Task) -> bool:
        """Marks a running call done; ``False`` if it already was (cancelled, timed out)."""
        if task.state == _SENT:  # a worker answered it before we saw it start
            self._start(task)
        if task.state != _RUNNING:
            return False
        task.state = _DONE
        self.n_running -= 1
        elapsed = time.perf_counter() - task.started
        self.run_time.record(elapsed)
        self.avg_run += (elapsed - self.avg_run) / 8
        return True

    # -- the manager thread --------------------------------------------------------------------

    def _manage(self, sel: selectors.BaseSelector) -> None:
        try:
            while self._step(sel):
                pass
        except BaseException as e:  # a bug here must not strand callers or leave processes behind
            self._fail_everything(RuntimeError(f"ferrio's process pool manager failed: {e!r}"), e)
            for worker in list(self.workers.values()):
                worker.proc.join(5)
                worker.chan.close()
            self.workers.clear()
            raise
        finally:
            sel.close()
            self._close_fds()

    def _step(self, sel: selectors.BaseSelector) -> bool:
        with self.lock:
            if self.closed and not self.workers and (self.stopping or self.broken or not self._has_queued()):
                return False
            want = 0
            if not self.stopping and self.broken is None and not self.hold_growth:
                # Each worker started takes a queued call with its INIT, so none is counted twice.
                want = min(self.max_workers - len(self.workers), self.n_queued + self.deficit)
                self.deficit = 0
            if self.closed and not self._has_queued():
                for w in self.workers.values():
                    if w.state == _IDLE:
                        self._retire(w)
                self.idle.clear()
            timeout = None
            if self.timeouts:
                timeout = min(max(0.0, self.timeouts[0][0] - time.monotonic()), _MAX_WAIT)
        # Before waiting (and before starting workers, which takes a while): what the last step
        # or a caller left for workers goes out now.
        self._write(sel)
        for _ in range(want):
            self._start_worker(sel)
        self._write(sel)
        for key, events in sel.select(timeout):
            if key.data is None:
                # Drain, then clear: cleared first, a wake() in between could have its byte
                # drained while its flag stayed set, and every later wake() would be skipped.
                # (A wake() between the two is seen: the next step re-reads the state.)
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self.wake_pending = False
                continue
            worker, is_sentinel = key.data
            try:
                if is_sentinel:
                    self._reap(sel, worker)
                elif worker.pid in self.workers:
                    if events & selectors.EVENT_WRITE:
                        self._flush(sel, worker)
                    if events & selectors.EVENT_READ:
                        self._read(sel, worker)
            except Exception as e:  # one bad event must not take the pool down with the manager
                self._event_failed(sel, worker, is_sentinel, e)
        if self.timeouts:
            self._expire()
        return True

    def _has_queued(self) -> bool:
        return self.n_queued > 0

    def _start_worker(self, sel: selectors.BaseSelector, retry: bool = True) -> None:
        try:
            parent, child = socket.socketpair()
        except OSError as e:  # out of descriptors, say: it may pass
            self._start_failed(e)
            return
        proc: BaseProcess | None = None
        started = False
        try:
            try:
                reserve_descriptors(child)
                proc = self.ctx.Process(
                    target=_process_worker.main, args=(child,), name=f"{self.name}-{next(self.numbers)}", daemon=False
                )
                proc.start()
                started = True
            finally:
                child.close()
            parent.setblocking(False)  # only the manager touches it, and never waits on it
            pid = proc.pid
            assert pid is not None  # set by start()
            worker = _Worker(proc, pid, _wire.Channel(parent))
            worker.chan.queue(_wire.INIT, 0, self.init)
            if self.init.buffers:
                worker.buffered = 0
            sel.register(worker.chan, selectors.EVENT_READ, (worker, False))
            try:
                sel.register(proc.sentinel, selectors.EVENT_READ, (worker, True))
            except BaseException:
                sel.unregister(worker.chan)
                raise
        except Exception as e:
            parent.close()
            if started and proc is not None and proc.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.join(5)
                with contextlib.suppress(ValueError):
                    proc.close()
            if isinstance(e, (OSError, EOFError)):  # a shortage, or a forkserver that died of one
                if retry and replace_dead_forkserver(self.ctx, e):
                    self._start_worker(sel, retry=False)
                    return
                self._start_failed(e)
            else:  # not a passing shortage: it would fail the same way again
                self._break(e, f"ProcessPool could not start a worker process: {e!r}")
            return
        with self.lock:
            self.workers[worker.pid] = worker
            self.started += 1
            self.n_starting += 1
            # Its first call goes right behind INIT: no round trip through READY before it runs.
            task = self._next_task() if not self.stopping and self.broken is None else None
            if task is not None:
                self._send(worker, task)
        self._flush(sel, worker)  # INIT; its first call follows from the outbox

    def _start_failed(self, error: OSError | EOFError) -> None:
        """A worker could not be started for a reason that may pass (EMFILE, EAGAIN, ENOMEM).

        With other workers alive, the queued calls wait for them (and the pool tries to grow
        again at the next call or worker exit). With none, the call the worker was for fails
        with the OSError; the pool stays usable.
        """
        task = None
        with self.lock:
            if self.workers:
                self.hold_growth = True
            elif not self.stopping and self.broken is None:
                task = self._next_task()
                if task is not None:
                    task.state = _DONE
                    task.release()
                    self.failed += 1
        if task is None:
            return
        why = (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__
        msg = (
            f"ProcessPool could not start a worker process to run '{task.name}': {why}; the pool "
            "stays usable, and the call may be retried once the system has resources again"
        )
        errno = error.errno if isinstance(error, OSError) else None
        exc = OSError(errno, msg) if errno is not None else OSError(msg)
        exc.__cause__ = error
        _settle(task, exc, True)

    def _write(self, sel: selectors.BaseSelector) -> None:
        """Queues on their channels the frames left in workers' outboxes, and writes what the
        sockets take now; the rest goes when they are writable."""
        with self.lock:
            if not self.dirty:
                return
            dirty, self.dirty = self.dirty, []
            batches: list[tuple[_Worker, list[Task | None]]] = []
            for w in dirty:
                w.dirty = False
                batches.append((w, list(w.outbox)))
                w.outbox.clear()
        for worker, items in batches:
            try:
                self._queue_frames(worker, items)
                self._flush(sel, worker)
            except Exception as e:  # one worker's trouble is not the manager's
                self._event_failed(sel, worker, False, e)

    def _queue_frames(self, worker: _Worker, items: list[Task | None]) -> None:
        chan = worker.chan
        for task in items:
            if task is None:
                chan.queue(_wire.EXIT, 0)
                continue
            p = task.pickled
            try:
                chan.queue(_wire.CALL | (_wire.AHEAD if task.ahead else 0), task.tid, p, worker.buffered is not None)
            except OSError as e:  # no shared memory for its buffers
                self._unsendable(worker, task, e)
                continue
            if p.buffers:
                worker.buffered = task.tid

    def _unsendable(self, worker: _Worker, task: Task, error: OSError) -> None:
        """A call given to a worker could not be framed: it fails, and never reaches the worker."""
        with self.lock:
            if task not in worker.tasks:
                return
            head = worker.tasks[0] is task
            worker.tasks.remove(task)
            if task.state == _SENT:
                self.n_sent -= 1
            elif task.state == _RUNNING:
                self.n_running -= 1
            live = task.state != _DONE
            task.state = _DONE
            task.release()
            if live:
                self.failed += 1
            if worker.state == _BUSY:
                if head and worker.tasks:
                    self._start(worker.tasks[0])
                elif not worker.tasks:
                    self._fill(worker)
        if live:
            exc = OSError(
                error.errno, f"ProcessPool could not send the call of '{task.name}' to a worker: {error.strerror}"
            )
            exc.__cause__ = error
            _settle(task, exc, True)

    def _flush(self, sel: selectors.BaseSelector, worker: _Worker) -> None:
        """Writes what the worker's socket takes without waiting; watches it for writability while
        frames are left."""
        if worker.eof:
            return
        chan = worker.chan
        try:
            chan.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it is dying: its sentinel fails or requeues its calls
        except OSError as e:  # it cannot get its calls (ETOOMANYREFS, say): they fail with why
            if worker.failure is None:
                worker.failure = e
            self._kill(worker)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if chan.wants_write() else 0)
        if events != worker.events:
            sel.modify(chan, events, (worker, False))
            worker.events = events

    def _read(self, sel: selectors.BaseSelector, worker: _Worker) -> None:
        try:
            more = worker.chan.pump()
        except BlockingIOError:  # woken for nothing
            more = True
        except OSError:  # it is dying, or sent more descriptors than a frame may carry
            more = False
        except Exception as e:  # a corrupt stream (a frame length past memory): kill it
            worker.failure = e
            self._kill(worker)
            more = False
        self._on_frames(worker)
        if not more:
            self._leave_selector(sel, worker)

    def _leave_selector(self, sel: selectors.BaseSelector, worker: _Worker) -> None:
        if not worker.eof:
            worker.eof = True
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(worker.chan)

    def _event_failed(self, sel: selectors.BaseSelector, worker: _Worker, is_sentinel: bool, error: Exception) -> None:
        """Handling a worker's event raised (a bug, or a resource gone): that worker is killed and
        its call fails with this error; the manager and the other workers go on."""
        if worker.failure is None:
            worker.failure = error
        self._kill(worker)
        if not is_sentinel:
            return
        # Reaping it failed half-way: forget it here, or its sentinel would fire forever.
        self._leave_selector(sel, worker)
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.unregister(worker.proc.sentinel)
        victims: list[Task] = []
        with self.lock:
            if self.workers.pop(worker.pid, None) is None:
                return
            with contextlib.suppress(ValueError):
                self.idle.remove(worker)
            if worker.state == _STARTING:
                self.n_starting -= 1
            for t in worker.tasks:
                if t.state == _SENT:
                    self.n_sent -= 1
                    t.state = _DONE
                    victims.append(t)
                elif self._finish(t):
                    victims.append(t)
                t.release()
            worker.tasks.clear()
            worker.outbox.clear()
            self.failed += len(victims)
            if not self.closed:
                self.deficit += 1
        with contextlib.suppress(Exception):
            worker.chan.close()
        for t in victims:
            _settle(t, self._handling_error(worker, t), True)

    def _handling_error(self, worker: _Worker, task: Task) -> BaseException:
        exc = RuntimeError(
            f"worker process {worker.pid} running '{task.name}' was killed: ferrio's process pool could not handle "
            f"what it sent ({worker.failure!r}); a replacement worker was started"
        )
        exc.__cause__ = worker.failure
        return exc

    def _on_frames(self, worker: _Worker) -> None:
        frames = worker.chan.frames()
        while frames:
            kind, tid, payload, fds = frames.popleft()
            try:
                self._on_frame(worker, kind, tid, payload, fds)
            except Exception as e:  # not a frame we can act on: the worker is killed, the manager goes on
                for fd in fds:
                    if fd >= 0:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                if worker.failure is None:
                    worker.failure = e
                self._kill(worker)

    def _on_frame(self, worker: _Worker, kind: int, tid: int, payload: bytes | bytearray, fds: list[int]) -> None:
        base = kind & ~_wire.LAST
        if base in (_wire.RESULT, _wire.ERROR):
            if worker.buffered == tid:
                worker.buffered = None  # answered, so its buffers were read
            self._on_result(worker, base, tid, kind & _wire.LAST, payload, fds)
        elif base == _wire.LOG:
            try:
                attrs = worker.chan.loads(payload, fds)
            except Exception as e:
                attrs = {
                    "name": "ferrio",
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": f"a log record from worker process {worker.pid} could not be unpickled: {e!r}",
                    "process": worker.pid,
                }
            _forward_log(attrs)
        elif base == _wire.READY:
            if worker.buffered == 0:
                worker.buffered = None
            with self.lock:
                if worker.state == _STARTING:
                    self.n_starting -= 1
                    self.early_deaths = self.early_crashes = self.early_kills = 0
                    worker.state = _BUSY
                    if worker.tasks:
                        self._start(worker.tasks[0])  # sent with INIT: it runs now
                    self._fill(worker)
        elif base == _wire.INIT_FAILED:
            try:
                exc, tb = worker.chan.loads(payload, fds)
            except Exception as e:
                exc = RuntimeError(
                    f"the initializer failed in worker process {worker.pid}, and its error could not be "
                    f"unpickled in the parent process: {e!r}"
                )
            else:
                with_remote_traceback(exc, tb)
            self._break(exc, f"the initializer failed in worker process {worker.pid}: {exc!r}")
        else:
            for fd in fds:
                os.close(fd)

    def _fill(self, worker: _Worker) -> None:
        """Under the lock: tops up a worker's pipeline from the queue, or parks it if it has nothing."""
        while len(worker.tasks) < (_PIPELINE if self._pipelining() else 1) and not self.stopping:
            task = self._next_task()
            if task is None:
                break
            self._send(worker, task)
        if worker.tasks:
            return
        worker.state = _IDLE
        if not self.closed or self._has_queued():
            self.idle.append(worker)
        else:
            self._retire(worker)

    def _on_result(
        self, worker: _Worker, kind: int, tid: int, last: int, payload: bytes | bytearray, fds: list[int]
    ) -> None:
        value: Any = None
        loaded = False
        if _wire.has_buffers(payload):  # read them out of the worker's arena before it gets a new call
            value, loaded = self._load_result(worker, None, payload, fds), True
        with self.lock:
            task = None
            for t in worker.tasks:
                if t.tid == tid:
                    task = t
                    break
            live = False
            if task is not None:
                worker.tasks.remove(task)
                task.release()
                live = self._finish(task)
                if worker.tasks and not last:  # after its last call the worker exits: the rest never start
                    self._start(worker.tasks[0])
            if last:
                worker.state = _RETIRING  # it exits now; the calls behind this one are sent elsewhere
            else:
                self._fill(worker)
            if live:
                if kind == _wire.ERROR:
                    self.failed += 1
                else:
                    self.completed += 1
        if not live or task is None:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            return
        if not loaded:
            value = self._load_result(worker, task, payload, fds)
        if isinstance(value, _Unloadable):
            if kind != _wire.ERROR:
                with self.lock:
                    self.completed -= 1
                    self.failed += 1
            kind = _wire.ERROR
            value = value.error
        if kind == _wire.ERROR:
            exc, tb = value
            if tb:
                with_remote_traceback(exc, tb)
            _settle(task, exc, True)
        else:
            _settle(task, value, False)

    def _load_result(self, worker: _Worker, task: Task | None, payload: bytes | bytearray, fds: list[int]) -> Any:
        try:
            return worker.chan.loads(payload, fds)
        except BaseException as e:
            name = task.name if task is not None else "a call"
            return _Unloadable(
                RuntimeError(f"the result of '{name}' could not be unpickled in the parent process: {e!r}"), ""
            )

    def _reap(self, sel: selectors.BaseSelector, worker: _Worker) -> None:
        # Read what it sent before it died: a last result, log records. (Without blocking: a
        # process it forked may hold its end of the socket open.)
        if not worker.eof:
            self._leave_selector(sel, worker)
            with contextlib.suppress(Exception):
                while worker.chan.pump():
                    pass
        self._on_frames(worker)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(worker.proc.sentinel)
        with self.lock:
            # Out of the pool's view before it is reaped: once reaped, its pid may be reused, and
            # nothing (a timeout, kill_on_cancel, worker_pids()) may signal it by that number.
            self.workers.pop(worker.pid, None)
            with contextlib.suppress(ValueError):
                self.idle.remove(worker)
        worker.proc.join(5)
        exitcode = worker.proc.exitcode
        error: BaseException | None = None
        task = None
        with self.lock:
            # Its results are all read, so the first call left is the one it died running, and
            # the calls behind it never started: they go back to the front of the queue.
            worker.outbox.clear()
            if worker.tasks and worker.tasks[0].state == _RUNNING:
                task = worker.tasks.popleft()
                task.release()
                self._finish(task)
                self.failed += 1
                if worker.failure is not None:  # the manager killed it, and says why
                    error = self._handling_error(worker, task)
                else:
                    self.crashed += 1
                    error = WorkerCrashed(worker.pid, exitcode, task.name)
            for t in reversed(worker.tasks):
                if t.state == _SENT:
                    t.state = _QUEUED
                    t.worker = None
                    self.n_sent -= 1
                    self.n_queued += 1
                    self.queue.appendleft(t)
                else:
                    t.release()
            worker.tasks.clear()
            early = False
            self.hold_growth = False  # a worker left: try to start its replacement
            if worker.state == _STARTING and worker.failure is None:
                self.n_starting -= 1
                early = self._fails_to_start(exitcode) and not (self.closed or self.broken)
            elif worker.state == _STARTING:
                self.n_starting -= 1
            if not self.closed and not early:
                self.deficit += 1
        worker.chan.close()
        with contextlib.suppress(ValueError):
            worker.proc.close()
        if task is not None and error is not None:
            _settle(task, error, True)
        if early:
            if exitcode is not None and exitcode < 0:
                try:
                    how = f"was killed by {signal.Signals(-exitcode).name}"
                except ValueError:
                    how = f"was killed by signal {-exitcode}"
                if -exitcode in _FAULT_SIGNALS:
                    hint = "it crashed while starting; its stderr says why (often the initializer or an import)"
                else:
                    hint = (
                        "something kills every worker as it starts (the out-of-memory killer, say, if the "
                        "initializer needs more memory than there is)"
                    )
            else:
                how = "died" if exitcode is None else f"exited with code {exitcode}"
                hint = "its stderr says why (often an error importing the main module)"
            self._break(
                RuntimeError(f"worker process {worker.pid} {how} before it was ready"),
                f"worker process {worker.pid} {how} before it was ready ({self.early_deaths} in a row); {hint}",
            )

    def _fails_to_start(self, exitcode: int | None) -> bool:
        """Under the lock: counts a worker that died before it was ready; whether that will repeat.

        One that exited by itself (an error importing the main module, ``sys.exit`` in the
        initializer) will fail again: at once. One that crashed by a fault of its own (SIGSEGV,
        SIGABRT) likely will: after a few in a row. One killed from outside (SIGKILL, SIGTERM:
        the out-of-memory killer, an operator) was not failing to start: it is replaced, and only
        a long run of them (something kills every worker at birth) breaks the pool.
        """
        if exitcode is None or exitcode >= 0:
            self.early_deaths += 1
            return True
        if -exitcode in _FAULT_SIGNALS:
            self.early_crashes += 1
            self.early_deaths = self.early_crashes
            return self.early_crashes >= _EARLY_CRASHES
        self.early_kills += 1
        self.early_deaths = self.early_kills
        return self.early_kills >= _EARLY_KILLS

    def _expire(self) -> None:
        now = time.monotonic()
        expired: list[tuple[Task, int]] = []
        with self.lock:
            while self.timeouts and self.timeouts[0][0] <= now:
                _, _, task = heapq.heappop(self.timeouts)
                worker = task.worker
                if task.state == _RUNNING and worker is not None and worker.tasks and worker.tasks[0] is task:
                    self._finish(task)
                    task.timed_out = True
                    self.failed += 1
                    self.timed_out += 1
                    self._kill(worker)
                    expired.append((task, worker.pid))
        for task, pid in expired:
            _settle(
                task,
                TimeoutError(
                    f"'{task.name}' was still running after timeout={task.timeout:g} s; its worker process "
                    f"{pid} was killed and a replacement started"
                ),
                True,
            )

    def _break(self, cause: BaseException, why: str) -> None:
        with self.lock:
            if self.broken is None:
                self.broken = cause
        self._fail_everything(BrokenProcessPool(f"the pool is broken: {why}; create a new pool"), cause)

    def _fail_everything(self, error: BaseException, cause: BaseException | None = None) -> None:
        error.__cause__ = cause
        with self.lock:
            self.closed = True
            victims = [t for t in self.queue if t.state == _QUEUED]
            self.queue.clear()
            self.n_queued = 0
            for t in victims:
                t.state = _DONE
                t.release()
            for w in self.workers.values():
                w.outbox.clear()  # it is killed below: nothing more is written to it
                for t in w.tasks:
                    if t.state == _SENT:
                        t.state = _DONE
                        self.n_sent -= 1
                        t.release()
                        victims.append(t)
                    elif self._finish(t):
                        victims.append(t)
                self._kill(w)
            self.failed += len(victims)
        for t in victims:
            _settle(t, error, True)

    def _close_fds(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.init.close()
        self.wake_r = self.wake_w = -1


class _Unloadable:
    __slots__ = ("error",)

    def __init__(self, exc: BaseException, tb: str) -> None:
        self.error = (exc, tb)


def _settle(task: Task, value: Any, failed: bool) -> None:
    """Delivers a result (or, when ``failed``, an exception) to the call's future."""
    if task.afut is not None:
        waker = task.waker
        assert waker is not None  # set with afut
        waker.post(task.afut, value, failed)
    elif task.cf is not None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if failed:
                task.cf.set_exception(value)
            else:
                task.cf.set_result(value)


def _cancel(task: Task) -> None:
    if task.afut is not None:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting
            task.afut.get_loop().call_soon_threadsafe(task.afut.cancel)
    elif task.cf is not None:
        task.cf.cancel()


def _forward_log(attrs: dict[str, Any]) -> None:
    try:
        record = logging.makeLogRecord(attrs)
        logger = logging.getLogger() if record.name == "root" else logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    except Exception:
        # A filter or handler that raises (or a malformed record): what logging does for a
        # handler that fails, on the manager thread too: say so on stderr and carry on.
        if logging.raiseExceptions:
            traceback.print_exc()


#: Every live pool's core: what interpreter exit stops and a forked child forgets.
_cores: weakref.WeakSet[Core] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    # Interpreter exit: calls still queued are cancelled and busy workers killed, so exit is prompt
    # and leaves no process behind. (``with pool:`` and ``shutdown()`` wait for work instead.)
    cores = list(_cores)
    for core in cores:
        core.close(cancel_futures=True, stop=True)
    deadline = time.monotonic() + 10
    for core in cores:
        thread = core.thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))


def _forget_in_child() -> None:
    """After ``os.fork()``, in the child: the parent's pools and workers are not ours. Their pools
    refuse new calls; new pools work, with a forkserver of the child's own (see
    :mod:`ferrio._process_forkserver`)."""
    children: set[BaseProcess] = getattr(multiprocessing.process, "_children", set())
    for core in list(_cores):
        core.closed = core.forked = True
        core.thread = None
        for worker in core.workers.values():
            children.discard(worker.proc)  # multiprocessing would try to join them at exit
            with contextlib.suppress(OSError):
                worker.chan.sock.close()
        core.workers.clear()
        core.idle.clear()
        core.lock = threading.Lock()


threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_forget_in_child)
