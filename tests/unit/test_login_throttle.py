"""``LoginThrottle`` alone, on a clock the test moves."""

from __future__ import annotations

import pytest

from kathan.auth.throttle import LoginThrottle
from kathan.errors import RateLimitError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_address_guessing_many_emails_is_locked_out_too() -> None:
    clock = Clock()
    throttle = LoginThrottle(failures=3, lockout=30, clock=clock)
    for i in range(11):  # two failures per email: no email is locked out
        throttle.failed(f"user{i % 6}@example.com", "10.0.0.9")
        throttle.check(f"user{i % 6}@example.com", "10.0.0.9")
    throttle.failed("user11@example.com", "10.0.0.9")  # the address's twelfth (3 x 4)
    with pytest.raises(RateLimitError) as info:
        throttle.check("fresh@example.com", "10.0.0.9")
    assert info.value.retry_after == 30
    throttle.check("fresh@example.com", "10.0.0.10")  # another address is not locked


def test_failures_older_than_the_window_do_not_add_up() -> None:
    clock = Clock()
    throttle = LoginThrottle(failures=3, lockout=30, window=60, clock=clock)
    for _ in range(2):
        throttle.failed("a@example.com", "1.2.3.4")
    clock.now += 61
    throttle.failed("a@example.com", "1.2.3.4")
    throttle.check("a@example.com", "1.2.3.4")  # one failure in the window, not three
    throttle.failed("a@example.com", "1.2.3.4")
    throttle.failed("a@example.com", "1.2.3.4")
    with pytest.raises(RateLimitError):
        throttle.check("a@example.com", "1.2.3.4")
    clock.now += 31
    throttle.check("a@example.com", "1.2.3.4")
