"""The main function of a :class:`ferrio.ProcessPool` worker process.

A worker reads one frame at a time from its socket: first ``INIT`` (the initializer and the
worker's settings), then ``CALL`` frames, each answered by a ``RESULT`` or ``ERROR`` frame, until
``EXIT`` or the end of the stream. Log records are forwarded to the parent as ``LOG`` frames.
The worker ignores SIGINT (Ctrl-C reaches the whole process group; the parent decides what to do)
and has the kernel kill it if its parent dies, so it cannot outlive the pool's process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import signal
import socket
import sys
import traceback
import types
from typing import Any

from . import _ferrio, _wire
from ._errors import describe


class _ForwardToParent(logging.Handler):
    """Sends each record to the parent, which hands it to its own logger of the same name."""

    def __init__(self, chan: _wire.Channel) -> None:
        super().__init__()
        self._chan = chan

    def emit(self, record: logging.LogRecord) -> None:
        try:
            attrs = dict(record.__dict__)
            attrs["msg"] = record.getMessage()
            attrs["args"] = None
            if record.exc_info:
                attrs["exc_text"] = logging.Formatter().formatException(record.exc_info)
            attrs["exc_info"] = None
            try:
                data = pickle.dumps(attrs, protocol=5)
            except Exception:
                plain = (int, float, str, type(None))
                data = pickle.dumps({k: v if isinstance(v, plain) else repr(v) for k, v in attrs.items()})
            self._chan.send(_wire.LOG, 0, _wire.plain(data))
        except Exception:
            self.handleError(record)


def _pickle_error(exc: BaseException, what: str) -> _wire.Pickled:
    """Pickles an exception with its formatted traceback; an unpicklable one becomes a RuntimeError."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None  # the frames would be pickled by cloudpickle and are in `tb` already
    try:
        p = _wire.dumps((exc, tb))
    except Exception as e:
        substitute = RuntimeError(
            f"{what} raised {type(exc).__qualname__}: {exc}, which cannot be sent to the parent process "
            f"({type(e).__name__}: {e}); its traceback follows as the cause"
        )
        p = _wire.dumps((substitute, tb))
    if p.buffers or p.shared:  # an exception holding large buffers: keep the message, drop the payload
        p.close()
        p = _wire.dumps((RuntimeError(f"{what} raised {type(exc).__qualname__}: {exc!s:.1000}"), tb))
    return p


_main_namespace: dict[str, Any] | None = None


def _in_main_namespace(fn: Any) -> Any:
    """A function of an interactive ``__main__`` (pickled by value), rebound to one namespace
    shared by every such function this worker receives, as a module's functions share its globals.

    cloudpickle gives each pickle its own copy of the globals a function uses, so without this an
    initializer's ``global counter`` assignment would be invisible to the functions called later.
    A name keeps the first value this worker saw for it.
    """
    global _main_namespace
    if not isinstance(fn, types.FunctionType) or fn.__module__ != "__main__":
        return fn
    real_main = sys.modules.get("__main__")
    if real_main is not None and fn.__globals__ is real_main.__dict__:
        return fn
    if _main_namespace is None:
        _main_namespace = {}
    for name, value in fn.__globals__.items():
        _main_namespace.setdefault(name, value)
    rebound = types.FunctionType(fn.__code__, _main_namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    rebound.__kwdefaults__ = fn.__kwdefaults__
    rebound.__qualname__ = fn.__qualname__
    rebound.__dict__.update(fn.__dict__)
    return rebound


def _let_the_forkserver_go() -> None:
    """Drop this process's copy of the forkserver's "parent alive" pipe.

    multiprocessing hands every forkserver child the write end of the pipe on which the
    forkserver waits for its parent's death (so the child could start processes through it too).
    While a worker holds it, a parent killed by SIGKILL leaves the forkserver waiting forever,
    and the worker's parent-death signal, tied to the forkserver, never comes. Without it, the
    forkserver exits with the parent and the kernel kills this worker. A pool started inside a
    worker then gets a forkserver of its own.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if server is None or alive is None:
        return
    with contextlib.suppress(OSError):
        os.close(alive)
    server._forkserver_alive_fd = None
    server._forkserver_pid = None
    server._forkserver_address = None


def main(sock: socket.socket) -> None:
    """Runs the worker until the parent says exit or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _let_the_forkserver_go()
    parent = os.getppid()
    _ferrio.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        return
    _whole_lines_out()
    chan = _wire.Channel(sock)
    try:
        _serve(chan)
    except EOFError:  # the pool closed our socket: it is gone or done with us
        pass
    finally:
        chan.close()


def _serve(chan: _wire.Channel) -> None:
    kind, _, payload, fds = chan.recv()
    if kind != _wire.INIT:
        raise RuntimeError(f"a ferrio worker expected its INIT frame first, got kind {kind}")
    initializer, initargs, max_tasks, log_level = chan.loads(payload, fds)
    initializer = _in_main_namespace(initializer)

    root = logging.getLogger()
    root.handlers[:] = [_ForwardToParent(chan)]
    root.setLevel(log_level)

    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:
            chan.send_pickled(_wire.INIT_FAILED, 0, _pickle_error(e, f"the initializer '{describe(initializer)}'"))
            return
        finally:
            _flush()
    chan.send(_wire.READY, 0)

    done = 0
    # Whether the last result sent had buffers in this side's arena. A call marked AHEAD was
    # queued before the parent read that result, so this call's buffers go to a fresh arena
    # rather than over the ones the parent may still be about to read.
    sent_buffers = False
    while True:
        kind, tid, payload, fds = chan.recv()
        if kind == _wire.EXIT:
            return
        fresh = bool(kind & _wire.AHEAD) and sent_buffers
        done += 1
        last = _wire.LAST if max_tasks is not None and done >= max_tasks else 0
        fn: Any = None
        try:
            fn, args, kwargs = chan.loads(payload, fds)
            fn = _in_main_namespace(fn)
            result = fn(*args, **kwargs)
        except BaseException as e:
            what = f"'{describe(fn)}'" if fn is not None else "unpickling the call"
            chan.send_pickled(_wire.ERROR | last, tid, _pickle_error(e, what))
            sent_buffers = False
        else:
            del payload, args, kwargs
            try:
                out = _wire.dumps(result)
            except Exception as e:
                err = TypeError(
                    f"'{describe(fn)}' returned {type(result).__qualname__!r}, which cannot be pickled to send "
                    f"it back to the parent process ({type(e).__name__}: {e}); return plain data instead"
                )
                chan.send_pickled(_wire.ERROR | last, tid, _pickle_error(err, f"'{describe(fn)}'"))
                sent_buffers = False
            else:
                try:
                    chan.send_pickled(_wire.RESULT | last, tid, out, fresh)
                finally:
                    sent_buffers = bool(out.buffers)
                    out.close()
            del result
        finally:
            _flush()
        if last:
            return


def run_chunk(fn: Any, items: list[Any]) -> tuple[list[Any], tuple[BaseException, str] | None]:
    """Runs ``fn`` over a chunk of :meth:`ProcessPool.amap`; stops at the first exception, which is
    returned with its traceback after the results before it."""
    fn = _in_main_namespace(fn)
    results: list[Any] = []
    for item in items:
        try:
            results.append(fn(item))
        except Exception as e:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            e.__traceback__ = None
            return results, (e, tb)
    return results, None


def _whole_lines_out() -> None:
    """multiprocessing starts workers with unbuffered stdout and stderr, so ``print(word)`` makes
    two writes, and the lines of workers printing at once tear (``howare``, then an empty line).
    Buffer by line instead: each line goes out in one write, and _flush() still runs after each
    call."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.write_through:
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True, write_through=False)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
