"""The one timeout rule, on both sides of the Rust boundary: what threading accepts and refuses."""

from __future__ import annotations

import math
import threading
from fractions import Fraction

import ferrio
import pytest
from ferrio._errors import check_timeout

BAD = [
    ("5", TypeError, "expected timeout to be a number of seconds or None, got '5' of type 'str'"),
    (True, TypeError, "got True of type 'bool'"),
    (b"1", TypeError, "of type 'bytes'"),
    (1j, TypeError, "of type 'complex'"),
    (math.nan, ValueError, "non-negative number of seconds or None, got nan"),
    (-0.5, ValueError, "got -0.5"),
    (1e300, OverflowError, "more than threading.TIMEOUT_MAX"),
    (10**400, OverflowError, "more than threading.TIMEOUT_MAX"),
    (threading.TIMEOUT_MAX * 2, OverflowError, "pass None or math.inf for no limit"),
]


@pytest.mark.parametrize(("value", "error", "match"), BAD)
def test_check_timeout_refuses_what_threading_refuses_naming_the_call(value, error, match) -> None:
    with pytest.raises(error, match=rf"^X\(\) .*{match}") as info:
        check_timeout("X()", value)
    assert "X()" in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"), [(None, None), (math.inf, None), (0, 0.0), (2, 2.0), (0.25, 0.25), (Fraction(1, 4), 0.25)]
)
def test_check_timeout_accepts_numbers_and_no_limit(value, seconds) -> None:
    assert check_timeout("X()", value) == seconds


def test_an_int_too_large_to_print_still_gets_the_overflow_error() -> None:
    with pytest.raises(OverflowError, match="an int of 16610 bits"):
        check_timeout("X()", 10**5000)


@pytest.mark.parametrize(("value", "error", "match"), [b for b in BAD if b[1] is not ValueError])
def test_the_rust_side_applies_the_same_rule(value, error, match) -> None:
    event = ferrio.Event()
    with pytest.raises(error, match=match):
        event.wait(value)
    q = ferrio.Queue()
    with pytest.raises(error, match=match):
        q.sync_q.get(timeout=value)


def test_an_infinite_timeout_on_the_rust_side_waits_for_the_event() -> None:
    event = ferrio.Event()
    threading.Timer(0.05, event.set).start()
    assert event.wait(math.inf) is True
