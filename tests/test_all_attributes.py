"""The public namespace: ``__all__`` is all of it, both ways, and every public object says it is
``ferrio.X`` (the shape of anyio's ``tests/test_all_attributes.py`` and trio's module fixup)."""

from __future__ import annotations

import inspect
import pickle
import sys
import types
import typing
from importlib.metadata import version

import ferrio
import ferrio.from_thread
import pytest

PUBLIC_MODULES = [ferrio, ferrio.from_thread]
# Public submodules that `import ferrio` does not import, so not in its __all__: the pytest
# plugin, which pytest imports by name (`-p ferrio.pytest_plugin`), and ferrio.sqlite, aiosqlite's
# API, imported by name in its place (its __all__ re-exports sqlite3's names, as aiosqlite's does).
LOADED_BY_NAME = ("pytest_plugin", "sqlite")


def _public_names(module: types.ModuleType) -> set[str]:
    # Not identifiers, so no one's attributes: the globals pytest's assertion rewriting adds
    # ("@py_builtins", "@pytest_ar") to a module it rewrites (a plugin's, as ferrio.pytest_plugin).
    return {
        name
        for name in dir(module)
        if not name.startswith("_") and name.isidentifier() and not (module is ferrio and name in LOADED_BY_NAME)
    }


def test_all_is_a_sorted_tuple_of_existing_names() -> None:
    for module in PUBLIC_MODULES:
        assert isinstance(module.__all__, tuple), module.__name__
        assert list(module.__all__) == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_in_all_and_every_name_in_all_is_public(module: types.ModuleType) -> None:
    exported = {name for name in module.__all__ if not name.startswith("__")}
    assert _public_names(module) == exported, (
        "helpers must be imported under _ names, and public objects listed in __all__"
    )


def test_the_private_submodules_are_the_only_private_module_attributes() -> None:
    # What a package cannot avoid: its submodules become attributes once imported. Each is private
    # but the namespace from_thread and those loaded by name.
    for name in _public_names(ferrio):
        if isinstance(getattr(ferrio, name), types.ModuleType):
            assert name == "from_thread", name


def _exported_objects() -> list[tuple[str, object]]:
    found = []
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if not isinstance(obj, types.ModuleType) and hasattr(obj, "__module__") and not name.startswith("__"):
                found.append((f"{module.__name__}.{name}", obj))
    return found


@pytest.mark.parametrize(("where", "obj"), _exported_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_public_objects_name_the_module_users_import_them_from(where: str, obj: object) -> None:
    module_name = obj.__module__  # type: ignore[attr-defined]
    assert module_name in ("ferrio", "ferrio.from_thread"), f"{where} reports module {module_name}"
    # The name it reports finds it again there: what pickle and the docs rely on.
    found = sys.modules[module_name]
    for part in obj.__qualname__.split("."):  # type: ignore[attr-defined]
        found = getattr(found, part)
    assert found is obj, where


def test_renamed_exports_report_their_public_names() -> None:
    assert ferrio.from_thread.run.__qualname__ == "run"
    assert ferrio.from_thread.run.__module__ == "ferrio.from_thread"
    assert ferrio.from_thread.run_sync.__name__ == "run_sync"
    assert pickle.loads(pickle.dumps(ferrio.from_thread.run)) is ferrio.from_thread.run


def test_methods_of_public_classes_follow_their_class() -> None:
    assert ferrio.ThreadPool.run.__module__ == "ferrio"
    assert ferrio.Queue.statistics.__qualname__ == "Queue.statistics"


def test_exceptions_print_their_public_names() -> None:
    assert repr(ferrio.QueueEmpty()) == "QueueEmpty()"
    assert f"{type(ferrio.NoEventLoopError('x')).__module__}.{ferrio.NoEventLoopError.__qualname__}" == (
        "ferrio.NoEventLoopError"
    )
    assert pickle.loads(pickle.dumps(ferrio.QueueFull("full"))).args == ("full",)


@pytest.mark.parametrize(("where", "obj"), _exported_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_type_hints_of_public_objects_resolve(where: str, obj: object) -> None:
    # Re-homing __module__ must not break typing.get_type_hints(), which resolves a class's string
    # annotations in the module __module__ names (pydantic, FastAPI and docs tools call it).
    if isinstance(obj, type):
        typing.get_type_hints(obj)
        for attr in vars(obj).values():
            if inspect.isfunction(attr):
                typing.get_type_hints(attr)
    elif callable(obj):
        typing.get_type_hints(obj)


def test_python_package_and_extension_versions_match() -> None:
    assert ferrio.__version__ == ferrio._ferrio.__version__ == version("ferrio")


def test_every_public_callable_is_documented() -> None:
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                assert obj.__doc__, f"{module.__name__}.{name} has no docstring"
