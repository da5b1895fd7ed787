"""Per-account login throttling: the pure part (tests/coordinator/test_accounts.py
has it over a real server)."""

from __future__ import annotations

from coordinator.services.auth import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail_when_allowed(throttle: LoginThrottle, clock: Clock, key: str) -> float:
    """Wait out the delay, fail once more, and return the delay that was waited."""
    waited = throttle.wait_s(key)
    clock.now += waited
    assert throttle.wait_s(key) == 0
    throttle.failed(key)
    return waited


def test_auth_throttle_delays_grow_from_the_sixth_attempt_up_to_the_cap() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    waits = [_fail_when_allowed(throttle, clock, "alice") for _ in range(20)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert waits[5:] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300, 300, 300]
    # A steady attacker stays at the cap: about 12 guesses an hour.
    assert throttle.wait_s("alice") == 300


def test_auth_throttle_refused_attempts_do_not_stretch_the_wait() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(8):
        throttle.failed("alice")
    assert throttle.wait_s("alice") == 8
    for _ in range(100):  # a flood of refused tries: the caller checks wait_s, not failed
        clock.now += 0.05
        assert throttle.wait_s("alice") > 0
    clock.now += 3.1
    assert throttle.wait_s("alice") == 0


def test_auth_throttle_success_resets_and_old_failures_expire() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(6):
        throttle.failed("alice")
    assert throttle.wait_s("alice") > 0
    throttle.succeeded("alice")
    assert throttle.wait_s("alice") == 0
    for _ in range(6):
        throttle.failed("bob")
    clock.now += 899
    assert throttle.wait_s("bob") == 0  # the wait is over, the failures still count
    throttle.failed("bob")
    assert throttle.wait_s("bob") == 4
    clock.now += 901  # 15 quiet minutes: forgotten
    assert throttle.wait_s("bob") == 0
    throttle.failed("bob")
    assert throttle.wait_s("bob") == 0  # one failure since: no delay


def test_auth_throttle_keys_are_independent_and_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_keys=100)
    for _ in range(6):
        throttle.failed("alice")
    assert throttle.wait_s("bob") == 0
    clock.now += 1000
    for i in range(150):
        throttle.failed(f"name{i}")
    assert len(throttle._failures) <= 100
