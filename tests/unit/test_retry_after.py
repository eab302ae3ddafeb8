"""The local engine's ``Retry-After`` estimate (``DrainEstimate``) and what feeds it.

Times are plain numbers (a fake monotonic clock); nothing here sleeps or loads a model.
"""

from __future__ import annotations

import pytest

from kathan.engine.runner import DrainEstimate
from kathan.engine.scheduler import QueueFull, Scheduler, SchedulerConfig


def held(drain: DrainEstimate, *seconds: float, start: float = 100.0) -> None:
    """Sequences that each held a slot ``seconds``, admitted at ``start``."""
    for s in seconds:
        drain.finished(admitted=start, now=start + s)


def test_no_estimate_before_any_sequence_finished() -> None:
    assert DrainEstimate().wait(ahead=5, running=4) is None  # the caller's fallback


def test_the_wait_is_what_must_leave_times_the_mean_hold_over_the_slots_busy() -> None:
    drain = DrainEstimate()
    held(drain, 2.0, 4.0)  # 3 s on average
    assert drain.wait(ahead=1, running=1) == 3
    assert drain.wait(ahead=4, running=2) == 6
    assert drain.wait(ahead=1, running=4) == 1  # 0.75 s, rounded up
    assert drain.wait(ahead=5, running=4) == 4  # 3.75 s, rounded up


def test_time_the_engine_sat_idle_does_not_count() -> None:
    busy, after_a_lull = DrainEstimate(), DrainEstimate()
    held(busy, 2.0, 2.0, start=0.0)
    held(after_a_lull, 2.0, start=0.0)
    held(after_a_lull, 2.0, start=3600.0)  # an hour with nothing to do in between
    assert busy.wait(ahead=3, running=1) == after_a_lull.wait(ahead=3, running=1) == 6


def test_sequences_that_end_in_the_same_step_are_not_an_instant_drain() -> None:
    drain = DrainEstimate()
    for _ in range(4):  # four sequences admitted together, ended together
        drain.finished(admitted=10.0, now=18.0)
    assert drain.wait(ahead=2, running=4) == 4


def test_only_the_latest_sequences_count() -> None:
    drain = DrainEstimate(keep=3)
    held(drain, 50.0, 50.0, 50.0)  # long requests, a while ago
    held(drain, 1.0, 1.0, 1.0)  # the engine serves short ones now
    assert drain.wait(ahead=2, running=1) == 2


@pytest.mark.parametrize(("hold", "ahead", "expected"), [
    (0.01, 1, DrainEstimate.MIN_SECONDS),  # never "retry now"
    (0.0, 1, DrainEstimate.MIN_SECONDS),
    (120.0, 10, DrainEstimate.MAX_SECONDS),  # a client is told at most a minute
])
def test_the_wait_is_bounded(hold: float, ahead: int, expected: int) -> None:
    drain = DrainEstimate()
    held(drain, hold)
    assert drain.wait(ahead=ahead, running=1) == expected


def test_no_sequence_running_counts_as_one() -> None:
    drain = DrainEstimate()
    held(drain, 2.0)
    assert drain.wait(ahead=2, running=0) == 4


def test_a_refusal_waits_for_the_sequences_that_must_leave_the_queue_first() -> None:
    s = Scheduler(SchedulerConfig(n_slots=2, n_ctx=256, max_batch_tokens=64,
                                  prefill_chunk=8, max_queued=2))
    for rid in (1, 2, 3, 4):
        s.add(rid, [1, 2, 3], max_tokens=4, now=0.0)  # 2 slots + 2 queued: full
    s.schedule()  # the first two take the slots
    drain = DrainEstimate()
    held(drain, 3.0)
    with pytest.raises(QueueFull) as one:
        s.add(5, [1, 2, 3], max_tokens=4, now=0.0)
    with pytest.raises(QueueFull) as two:
        s.add(6, [1, 2, 3], max_tokens=4, now=0.0, n=2)
    assert (one.value.excess, two.value.excess) == (1, 2)
    running = len(s.running)
    assert running == 2
    # A slot frees every 1.5 s: one place in 2 s (rounded up), two in 3 s.
    assert drain.wait(one.value.excess, running) == 2
    assert drain.wait(two.value.excess, running) == 3
