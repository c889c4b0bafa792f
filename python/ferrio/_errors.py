"""Exceptions ferrio defines: each subclasses what callers already catch."""

from __future__ import annotations


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
