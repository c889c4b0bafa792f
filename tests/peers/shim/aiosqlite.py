"""``import aiosqlite`` that gives ``ferrio.sqlite``: the name-mapping shim of tests/test_aiosqlite_suite.py.

This directory goes first on the ``PYTHONPATH`` of the subprocess that runs aiosqlite's own tests,
so their ``import aiosqlite`` finds this module instead of aiosqlite (installed or not). It puts
``ferrio.sqlite`` itself in its place in ``sys.modules``, rather than copying names over: a name
the tests use that ferrio lacks then fails as ferrio's ``AttributeError``, not as something this
shim forgot, and ``aiosqlite is ferrio.sqlite`` holds for every later import.
"""

import sys

import ferrio.sqlite

sys.modules[__name__] = ferrio.sqlite
