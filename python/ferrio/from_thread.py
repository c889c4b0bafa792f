"""Calls from worker threads back into an event loop (anyio's and trio's names).

::

    def blocking_step(x):                                 # running on a ferrio worker
        ferrio.from_thread.run_sync(progress.update, x)   # a sync call on the loop that sent us
        return ferrio.from_thread.run(save_async, x)      # a coroutine on that loop, result back

From a ferrio worker the target is the event loop whose task awaits the job. From any other
thread, pass ``token=ferrio.current_token()`` taken on the loop's thread. The calling thread
blocks (without the GIL) until the call ends; the call runs in a copy of the worker's context.
"""

from ._loops import EventLoopToken
from ._loops import from_thread_run as run
from ._loops import from_thread_run_sync as run_sync
from ._public import fixup_module_metadata as _fixup_module_metadata
from ._threads import check_cancelled

__all__ = ("EventLoopToken", "check_cancelled", "run", "run_sync")

# ferrio.from_thread.run, not ferrio._loops.from_thread_run; the other two are ferrio's own objects.
_fixup_module_metadata(__name__, globals(), ("run", "run_sync"))
