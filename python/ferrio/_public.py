"""Makes ferrio's public objects name the module users import them from.

Everything public is defined in a private module (``ferrio._sync``, ``ferrio._loops``, ...) and
re-exported. :func:`fixup_module_metadata` then sets ``__module__`` (and ``__qualname__`` where an
object is exported under another name), as trio's function of that name does, so that reprs,
tracebacks, pickles and docs say ``ferrio.QueueEmpty`` rather than ``ferrio._sync.QueueEmpty``.
This module imports nothing else of ferrio.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable


def fixup_module_metadata(module_name: str, namespace: dict[str, object], names: Iterable[str]) -> None:
    """Re-homes ``namespace[name]`` for each of ``names`` (and the methods of classes among them)
    to ``module_name``, if it is defined in one of ferrio's private modules.

    A class's own annotations are resolved first, where they were written, so that
    :func:`typing.get_type_hints` keeps working once ``__module__`` points elsewhere.
    """
    seen: set[int] = set()

    def fix_one(qualname: str, name: str, obj: object) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        module = getattr(obj, "__module__", None)
        if not (isinstance(module, str) and module.startswith("ferrio._")):
            return
        own = inspect.get_annotations(obj) if isinstance(obj, type) else {}
        if own:
            hints = typing.get_type_hints(obj, include_extras=True)
            obj.__annotations__ = {k: hints[k] for k in own}
        try:
            obj.__module__ = module_name
        except (AttributeError, TypeError):  # a compiled class: Rust sets its module
            return
        if hasattr(obj, "__qualname__"):
            obj.__qualname__ = qualname  # pyright: ignore[reportAttributeAccessIssue]  # checked just above
        if hasattr(obj, "__name__") and not isinstance(obj, type):
            obj.__name__ = name  # pyright: ignore[reportAttributeAccessIssue]  # a function: writable
        if isinstance(obj, type):
            for attr_name, attr in list(obj.__dict__.items()):
                fix_one(f"{qualname}.{attr_name}", attr_name, attr)

    for name in names:
        fix_one(name, name, namespace[name])
