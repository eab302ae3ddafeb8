"""The scheduler as a state machine, without a model."""

from __future__ import annotations

import pytest

from kathan.engine.scheduler import (
    Plan,
    PromptTooLong,
    QueueFull,
    Scheduler,
    SchedulerConfig,
    SeqId,
    State,
)


def make(n_slots: int = 4, n_ctx: int = 256, batch: int = 32, chunk: int = 8,
         queued: int = 8, offload: bool = True) -> Scheduler:
    return Scheduler(SchedulerConfig(n_slots=n_slots, n_ctx=n_ctx, max_batch_tokens=batch,
                                     prefill_chunk=chunk, max_queued=queued,
                                     offload_idle=offload))


def step(s: Scheduler, token: int = 7) -> Plan:
    """Run one step, sampling ``token`` wherever the plan asks for logits."""
    plan = s.schedule()
    sampled: dict[SeqId, int] = {st.seq: token for st in plan.steps if st.sample}
    for fork in plan.forks:
        sampled[fork.child] = token + 1
    s.update(sampled, plan)
    return plan


def test_prompt_is_prefilled_then_decoded_one_token_per_step() -> None:
    s = make()
    s.add(1, [1, 2, 3], max_tokens=5, now=0)
    plan = step(s)
    assert [(st.seq, st.start, st.tokens, st.sample) for st in plan.steps] == [
        ((1, 0), 0, (1, 2, 3), True)]
    plan = step(s, token=9)
    assert [(st.start, st.tokens) for st in plan.steps] == [(3, (7,))]
    assert s.running[(1, 0)].tokens == [1, 2, 3, 7]
    assert s.running[(1, 0)].pending == 9


def test_admission_is_fifo_and_bounded_by_slots() -> None:
    s = make(n_slots=2)
    for rid in (1, 2, 3):
        s.add(rid, [rid, 0, 0], max_tokens=4, now=rid)
    plan = step(s)
    assert plan.admitted == ((1, 0), (2, 0))
    assert s.queued == 1
    s.finish([(1, 0)])
    plan = step(s)
    assert plan.admitted == ((3, 0),)


def test_queue_limit_counts_only_requests_beyond_free_slots() -> None:
    s = make(n_slots=2, queued=1)
    s.add(1, [1], max_tokens=1, now=0)
    s.add(2, [1], max_tokens=1, now=0)  # both fit in free slots at the next step
    s.add(3, [1], max_tokens=1, now=0)  # the one queued request
    with pytest.raises(QueueFull):
        s.add(4, [1], max_tokens=1, now=0)
    step(s)
    with pytest.raises(QueueFull):
        s.add(4, [1], max_tokens=1, now=0)


def test_request_larger_than_kv_is_refused() -> None:
    s = make(n_ctx=16)
    with pytest.raises(PromptTooLong):
        s.add(1, list(range(10)), max_tokens=10, now=0)


def test_long_prefill_is_chunked_while_others_decode() -> None:
    s = make(chunk=8, batch=32)
    s.add(1, [1, 2], max_tokens=50, now=0)
    step(s)  # request 1 prefilled, now decoding
    s.add(2, list(range(100, 130)), max_tokens=5, now=1)
    plan = step(s)
    sizes = {st.seq: len(st.tokens) for st in plan.steps}
    assert sizes[(1, 0)] == 1
    assert sizes[(2, 0)] == 8  # the chunk budget, not the whole prompt
    assert not next(st for st in plan.steps if st.seq == (2, 0)).sample
    for _ in range(3):
        step(s)
    assert s.running[(2, 0)].state is State.DECODE


def test_alone_a_prompt_uses_the_whole_batch() -> None:
    s = make(chunk=8, batch=32)
    s.add(1, list(range(30)), max_tokens=2, now=0)
    plan = step(s)
    assert len(plan.steps[0].tokens) == 30


def test_prefix_is_reused_from_an_idle_slot() -> None:
    s = make(n_slots=2)
    system = list(range(50, 80))
    s.add(1, [*system, 1, 2], max_tokens=3, now=0)
    step(s)
    step(s)
    s.finish([(1, 0)])
    s.add(2, [*system, 3, 4], max_tokens=3, now=1)
    plan = step(s)
    seq = s.running[(2, 0)]
    assert seq.cached == 30
    assert plan.steps[0].start == 30 and plan.steps[0].tokens == (3, 4)
    assert (seq.slot, 30) in plan.trims  # the old tail beyond the shared prefix is dropped


def test_identical_prompt_recomputes_only_its_last_token() -> None:
    s = make()
    s.add(1, [1, 2, 3, 4], max_tokens=2, now=0)
    step(s)
    s.finish([(1, 0)])
    s.add(2, [1, 2, 3, 4], max_tokens=2, now=1)
    plan = step(s)
    assert plan.steps[0].tokens == (4,)
    assert s.running[(2, 0)].cached == 3


def test_n_choices_share_the_prompt_through_a_fork() -> None:
    s = make()
    s.add(1, [1, 2, 3], max_tokens=4, now=0, n=3)
    plan = step(s)
    assert len(plan.steps) == 1  # the prompt is computed once
    assert {f.child for f in plan.forks} == {(1, 1), (1, 2)}
    assert all(f.parent == (1, 0) for f in plan.forks)
    plan = step(s)
    assert sorted(st.seq for st in plan.steps) == [(1, 0), (1, 1), (1, 2)]
    assert all(st.start == 3 for st in plan.steps)


def test_finish_frees_the_slot_and_abort_removes_waiting() -> None:
    s = make(n_slots=1)
    s.add(1, [1], max_tokens=3, now=0)
    s.add(2, [2], max_tokens=3, now=0)
    step(s)
    assert s.abort(2) == []
    assert s.queued == 0
    assert s.abort(1) == [(1, 0)]
    assert not s.running
    assert s.slots[0].owner is None


def test_queue_timeout_expires_only_unstarted_requests() -> None:
    s = make(n_slots=1)
    s.add(1, [1], max_tokens=3, now=0)
    s.add(2, [2], max_tokens=3, now=0)
    step(s)
    assert s.expire(now=10, timeout=5) == [2]
    assert s.queued == 0


def test_kv_exhaustion_evicts_idle_caches_then_preempts_the_youngest() -> None:
    s = make(n_slots=3, n_ctx=24, chunk=32, batch=32, offload=False)
    s.add(9, [9] * 6, max_tokens=1, now=0)
    step(s)
    s.finish([(9, 0)])  # leaves 6 cached cells in an idle slot
    s.add(1, [1] * 8, max_tokens=12, now=1)
    s.add(2, [2] * 8, max_tokens=12, now=2)
    step(s)
    assert len(s.running) == 2
    preempted: list[SeqId] = []
    for _ in range(6):
        plan = step(s)
        preempted += plan.preempted
        assert s.kv_cells_used <= 24
    assert preempted == [(2, 0)]
    assert all(not slot.cache for slot in s.slots if slot.owner is None)
    victim = s.waiting[0][0]
    assert victim.id == (2, 0) and victim.resume and victim.generated > 0
    # The survivor finishes; the victim is recomputed and resumes without sampling again.
    s.finish([(1, 0)])
    plan = step(s)
    resumed = next(st for st in plan.steps if st.seq == (2, 0))
    assert resumed.start == 0 and not resumed.sample
    plan = step(s)
    assert [st.tokens for st in plan.steps] == [(victim.pending,)] or plan.steps[0].sample


def test_preempted_requests_are_not_expired() -> None:
    s = make(n_slots=2, n_ctx=20, chunk=32, batch=32)
    s.add(1, [1] * 6, max_tokens=10, now=0)
    s.add(2, [2] * 6, max_tokens=10, now=0)
    for _ in range(6):
        step(s)
    assert s.queued == 1
    assert s.expire(now=100, timeout=1) == []


def test_excess_counts_what_must_leave_the_queue_before_a_request_fits() -> None:
    s = Scheduler(SchedulerConfig(n_slots=1, n_ctx=256, max_batch_tokens=64,
                                  prefill_chunk=8, max_queued=1))
    assert s.excess() == 0  # a free slot takes it
    s.add(1, [1, 2, 3], max_tokens=4, now=0.0)
    assert s.excess() == 0  # the slot will take the first, the queue the second
    s.add(2, [1, 2, 3], max_tokens=4, now=0.0)
    assert s.excess() == 1 and s.excess(2) == 2
    with pytest.raises(QueueFull) as full:
        s.add(3, [1, 2, 3], max_tokens=4, now=0.0)
    assert full.value.excess == 1


def test_idle_caches_move_to_host_memory_while_others_run_and_come_back_on_a_hit() -> None:
    s = make(n_slots=3, chunk=64)
    system = list(range(50, 80))
    s.add(1, [*system, 1, 2], max_tokens=8, now=0)
    plan = step(s)
    assert not plan.offloads  # nothing idle yet
    s.add(2, [9] * 10, max_tokens=8, now=1)
    step(s)
    s.finish([(1, 0)])
    slot = next(sl for sl in s.slots if sl.owner is None and sl.cache)
    used = s.kv_cells_used
    plan = step(s)
    assert plan.offloads == (slot.id,) and slot.offloaded and len(slot.cache) == 33
    assert s.kv_cells_used == used - 33 + 1  # its cells freed; the runner grew by one
    assert not step(s).offloads  # once
    # A prompt that shares the system prompt gets the cache back, then its tail trimmed.
    s.add(3, [*system, 3, 4], max_tokens=3, now=2)
    plan = step(s)
    seq = s.running[(3, 0)]
    assert plan.restores == (slot.id,) and seq.slot == slot.id and seq.cached == 30
    assert (slot.id, 30) in plan.trims and not slot.offloaded
    assert [st.tokens for st in plan.steps if st.seq == (3, 0)] == [(3, 4)]


def test_a_lone_sequence_keeps_its_cache_in_kv_and_offloads_are_bounded_by_n_ctx() -> None:
    s = make(n_slots=4, n_ctx=64, chunk=64)
    s.add(1, [1] * 20, max_tokens=2, now=0)
    step(s)
    s.finish([(1, 0)])
    s.add(2, [2] * 20, max_tokens=2, now=1)
    plan = step(s)  # 2 runs now: 1's cache leaves the KV
    assert len(plan.offloads) == 1
    s.finish([(2, 0)])
    assert not s.schedule().offloads  # nothing runs: an idle cache costs nothing
    s.add(3, [3] * 30, max_tokens=2, now=2)
    s.add(4, [4] * 10, max_tokens=2, now=3)
    step(s)
    s.finish([(3, 0)])
    plan = step(s)
    # 20 + 20 + 31 offloaded tokens exceed n_ctx=64: the least recently used is dropped.
    held = [sl for sl in s.slots if sl.offloaded]
    assert sum(len(sl.cache) for sl in held) <= 64
    dropped = [slot for slot, keep in plan.trims if keep == 0]
    assert len(dropped) == 1 and not s.slots[dropped[0]].cache


def test_a_few_shared_opening_tokens_do_not_take_a_cached_slot() -> None:
    s = make(n_slots=3, chunk=64, batch=64)
    template = [1, 2, 3]  # what every prompt of a chat template opens with
    s.add(1, [*template, *range(10, 60)], max_tokens=2, now=0)
    step(s)
    s.finish([(1, 0)])
    cached = next(sl for sl in s.slots if sl.cache)
    s.add(2, [*template, *range(200, 210)], max_tokens=2, now=1)
    step(s)
    assert s.running[(2, 0)].slot != cached.id and s.running[(2, 0)].cached == 0
    assert len(cached.cache) == 53  # kept whole (in host memory while 2 runs)
    # A prompt that shares most of it still takes it.
    s.add(3, [*template, *range(10, 50), 7], max_tokens=2, now=2)
    step(s)
    assert s.running[(3, 0)].slot == cached.id and s.running[(3, 0)].cached == 43
