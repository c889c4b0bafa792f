"""How a :class:`ferrio.ProcessPool` starts its worker processes: the start method, and the glue
around CPython's forkserver.

Workers start with forkserver (spawn where there is none), never with fork: the pool starts them
from its manager thread, and a forked child of a process with threads can deadlock. This module
chooses the :mod:`multiprocessing` context, has the forkserver import the worker's module once so
workers start in milliseconds, makes sure a start cannot run out of descriptors half-way (which
would make the forkserver exit, taking its workers with it), replaces a forkserver that stopped
serving, and after ``os.fork()`` makes the child forget the parent's forkserver.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing import forkserver
from multiprocessing.context import BaseContext, ForkServerContext, SpawnContext
from typing import TypeAlias

#: The contexts a pool starts workers with: fork is refused (see start_context).
StartContext: TypeAlias = "ForkServerContext | SpawnContext"
#: Descriptors starting a worker takes in this process, at most, beside its socket pair.
_FDS_PER_START = 8


def _default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def start_context(api: str, start_method: str | None) -> tuple[StartContext, str]:
    """The :mod:`multiprocessing` context a pool starts its workers with, and its method's name.

    ``None`` picks forkserver where there is one, else spawn. Raises ValueError, naming ``api``,
    for ``"fork"`` and for a method this platform does not offer.
    """
    method = _default_start_method() if start_method is None else start_method
    if method == "fork":
        raise ValueError(
            f"{api} does not use start_method='fork': workers are started from the pool's manager thread, "
            f"and this process runs {threading.active_count()} thread(s) already; a forked child of a "
            "process with threads can deadlock on a lock some other thread held. Use 'forkserver' "
            "(the default) or 'spawn'"
        )
    if method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"{api} got start_method={method!r}; this platform offers "
            f"{[m for m in multiprocessing.get_all_start_methods() if m != 'fork']}"
        )
    ctx: StartContext
    if method == "forkserver":
        ctx = multiprocessing.get_context("forkserver")
        _preload_worker_module(ctx)
    else:  # the one other method offered (and not refused)
        ctx = multiprocessing.get_context("spawn")
    return ctx, method


def _preload_worker_module(ctx: ForkServerContext) -> None:
    # Workers forked by a forkserver that already imported ferrio start in a few milliseconds
    # instead of importing it each. Only adds to the preload list, and only before it starts.
    server = getattr(forkserver, "_forkserver", None)
    modules = getattr(server, "_preload_modules", None)
    if server is None or getattr(server, "_forkserver_pid", 0) is not None or not isinstance(modules, list):
        return
    if "ferrio._process_worker" not in modules:
        ctx.set_forkserver_preload([*modules, "ferrio._process_worker"])


def replace_dead_forkserver(ctx: BaseContext, error: BaseException) -> bool:
    """After a failed start: whether the forkserver is gone, made sure of, so the next start
    launches a new one.

    CPython's forkserver exits when a request is cut short (the parent ran out of descriptors
    between connecting and sending them, say), and until it has exited the parent's
    ``ensure_running()`` believes it alive: starts fail with ECONNREFUSED, or EPIPE/ECONNRESET
    sending to it, or EOF reading the new pid from it. Such an error means it no longer serves:
    kill it and wait for it to exit without reaping it, which leaves ``ensure_running()`` to
    reap it and start another. Any other error (EMFILE before connecting, a child killed while
    it read its data) leaves the forkserver alone: killing it would kill every worker it forked.
    """
    if ctx.get_start_method() != "forkserver":
        return False
    refused = isinstance(error, (ConnectionRefusedError, FileNotFoundError, EOFError))
    cut = isinstance(error, (BrokenPipeError, ConnectionResetError)) and _raised_in(error, "connect_to_new_process")
    if not (refused or cut):
        return False
    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid is None or not hasattr(os, "waitid"):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # SIGKILL is prompt: this is brief
    except (ProcessLookupError, ChildProcessError):
        return False
    return True


def reserve_descriptors(sock: socket.socket) -> None:
    """Raises OSError (EMFILE) unless the descriptors a start needs are free now.

    Starting a process opens several (a connection to the forkserver, two pipes, a sentinel),
    and CPython's forkserver exits when a request to it is cut short, which would take every
    worker it forked down with it. So a start that would run out of descriptors half-way
    fails here, before it begins. (Another thread may still take some in between: then the
    forkserver is replaced, see replace_dead_forkserver.)
    """
    taken: list[int] = []
    try:
        for _ in range(_FDS_PER_START):
            taken.append(os.dup(sock.fileno()))
    finally:
        for fd in taken:
            os.close(fd)


def _raised_in(error: BaseException, function: str) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


def _forget_inherited_forkserver() -> None:
    # After os.fork(), in the child: the inherited forkserver is the parent's child, which this
    # process cannot wait for; forget it so the first pool here starts one (what CPython does when
    # it finds it dead).
    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        alive = getattr(server, "_forkserver_alive_fd", None)
        if alive is not None:
            with contextlib.suppress(OSError):
                os.close(alive)
        server._forkserver_pid = None
        server._forkserver_alive_fd = None
        server._forkserver_address = None
        server._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited_forkserver)
