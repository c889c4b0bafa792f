"""The public namespace and the package's own consistency checks."""

from __future__ import annotations

from importlib.metadata import version

import ferrio


def test_all_is_a_sorted_tuple_of_existing_names() -> None:
    assert isinstance(ferrio.__all__, tuple)
    assert list(ferrio.__all__) == sorted(ferrio.__all__)
    for name in ferrio.__all__:
        assert hasattr(ferrio, name), name


def test_python_package_and_extension_versions_match() -> None:
    assert ferrio.__version__ == ferrio._ferrio.__version__ == version("ferrio")


def test_every_public_callable_is_documented() -> None:
    for name in ferrio.__all__:
        obj = getattr(ferrio, name)
        if callable(obj):
            assert obj.__doc__, f"ferrio.{name} has no docstring"
