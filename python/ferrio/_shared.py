"""``SharedValue`` and ``SharedCounter``: numbers in shared memory, changed atomically.

The number lives in an anonymous shared-memory file (a memfd on Linux) mapped by every process
that holds the value. Sending it to a :class:`ferrio.ProcessPool` worker (as an argument, in
``initargs``, or inside any pickled object) passes the file's descriptor beside the call, and so
does starting a :class:`multiprocessing.Process` with it; the memory is freed when the last
process holding it lets go, so nothing is left in ``/dev/shm``.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Generic, TypeVar

from . import _ferrio, _wire

N = TypeVar("N", int, float)


class SharedValue(Generic[N]):
    """A 64-bit int or float shared by threads and processes, changed with atomic operations only.

    ::

        hits = ferrio.SharedValue(0)                  # an int; SharedValue(0.0) holds a float
        pool = ferrio.ProcessPool(initializer=init, initargs=(hits,))
        hits.add(1); hits.value; ok, before = hits.compare_exchange(1, 5)

    No lock is needed or offered: every method is one atomic instruction (a compare-and-swap loop
    for float ``add``), safe from any thread of any process holding the value, and none releases
    or needs more than the GIL it is called with. Ints wrap at 64 bits; floats compare bit for bit
    in :meth:`compare_exchange`.

    It can be sent to the workers of a :class:`ferrio.ProcessPool` and to a
    :class:`multiprocessing.Process` at its start; pickling it anywhere else raises
    :exc:`TypeError`, since a copy would no longer be shared.

    Args:
        value: The initial value; its type (int or float) is the value's type for good.

    Raises:
        TypeError: ``value`` is neither an int nor a float.
        OverflowError: an int does not fit in 64 bits.
    """

    __slots__ = ("__weakref__", "_cell", "_fd", "_float")

    def __init__(self, value: N = 0) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{type(self).__name__}() expected an int or a float as its initial value, got {value!r}")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise OverflowError(f"{type(self).__name__}() holds 64-bit ints, and {value} does not fit")
        fd = _wire.new_shared_fd(8, "ferrio-shared-value")
        self._attach(fd, isinstance(value, float))
        self._cell.set(value)

    def _attach(self, fd: int, is_float: bool) -> None:
        try:
            self._cell = _ferrio.SharedCell(fd, is_float)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._float = is_float
        weakref.finalize(self, os.close, fd)

    @property
    def value(self) -> N:
        """The value now (reading and assigning are each atomic; ``+=`` on it is not: use :meth:`add`)."""
        value: N = self._cell.get()
        return value

    @value.setter
    def value(self, value: N) -> None:
        self._cell.set(value)

    def get(self) -> N:
        """The value now."""
        value: N = self._cell.get()
        return value

    def set(self, value: N) -> None:
        """Stores ``value``."""
        self._cell.set(value)

    def add(self, delta: N = 1) -> N:
        """Adds ``delta`` atomically and returns the new value."""
        value: N = self._cell.add(delta)
        return value

    def swap(self, value: N) -> N:
        """Stores ``value``; returns the old one."""
        old: N = self._cell.swap(value)
        return old

    def compare_exchange(self, expected: N, new: N) -> tuple[bool, N]:
        """Stores ``new`` if the value is ``expected``; returns ``(succeeded, value before)``."""
        return self._cell.compare_exchange(expected, new)

    def __repr__(self) -> str:
        return f"ferrio.{type(self).__name__}({self._cell.get()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        index = _wire.send_fd(self._fd)
        if index is not None:
            return _from_frame, (type(self), index, self._float)
        from multiprocessing.context import get_spawning_popen
        from multiprocessing.reduction import DupFd

        if get_spawning_popen() is not None:  # a multiprocessing.Process being started
            return _from_process_start, (type(self), DupFd(self._fd), self._float)
        raise TypeError(
            f"a ferrio.{type(self).__name__} can only be sent to ferrio.ProcessPool workers or to a "
            "multiprocessing.Process as it starts; a pickled copy elsewhere would no longer be shared"
        )


def _adopt(cls: type[SharedValue[Any]], fd: int, is_float: bool) -> SharedValue[Any]:
    value = cls.__new__(cls)
    value._attach(fd, is_float)
    return value


def _from_frame(cls: type[SharedValue[Any]], index: int, is_float: bool) -> SharedValue[Any]:
    return _adopt(cls, _wire.take_fd(index), is_float)


def _from_process_start(cls: type[SharedValue[Any]], dupfd: Any, is_float: bool) -> SharedValue[Any]:
    return _adopt(cls, dupfd.detach(), is_float)


class SharedCounter(SharedValue[int]):
    """A :class:`SharedValue` that holds an int: ``counter.add(1)`` from any thread or process.

    ::

        counter = ferrio.SharedCounter(0)
        await ferrio.to_process(work, counter)        # in the worker: counter.add(1)
        counter.value

    Raises:
        TypeError: ``value`` is not an int.
    """

    __slots__ = ()

    def __init__(self, value: int = 0) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"SharedCounter() expected an int as its initial value, got {value!r}")
        super().__init__(value)
