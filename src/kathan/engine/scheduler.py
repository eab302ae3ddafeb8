"""The scheduler: a pure, synchronous state machine for continuous batching.

It decides; the runner executes. Nothing here touches llama.cpp or threads,
so every policy (admission order, slot and KV limits, prefill chunking,
preemption, finishing, aborting) is tested without a model.

One step of the runner is::

    plan = scheduler.schedule()      # what to put in the next llama_decode
    ...decode, sample...
    scheduler.update({seq_id: token})  # tokens sampled this step
    scheduler.finish([seq_id, ...])    # sequences that ended (EOS, stop, length, cancel)

Slots are llama.cpp sequence ids. A slot keeps its tokens' KV cells after its
sequence finishes, so a later prompt that shares a prefix (a system prompt,
the earlier turns of a chat) reuses them. Idle caches are evicted, least
recently used first, when their cells are needed.

While other sequences run, an idle cache is moved to host memory (``Plan.offloads``)
and its cells freed: llama.cpp's unified KV cache has every decoded token attend over
all cells up to the highest one in use, skipping other sequences' cells one by one, so
idle caches cost every running sequence time (15 idle caches of 170 tokens made a lone
sequence's tokens 10-20% slower here). A prompt that shares an offloaded cache's prefix
has it put back (``Plan.restores``). Offloaded caches hold at most ``n_ctx`` tokens in
all; beyond that the least recently used are dropped.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

SeqId = tuple[int, int]
"""(request id, choice index)."""


class QueueFull(Exception):
    """The admission queue is at its limit; ``excess`` sequences must leave it first."""

    def __init__(self, message: str, *, excess: int = 1) -> None:
        super().__init__(message)
        self.excess = excess


class PromptTooLong(Exception):
    """The request can never fit in the KV cache."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    n_slots: int
    n_ctx: int
    max_batch_tokens: int
    prefill_chunk: int
    max_queued: int
    offload_idle: bool = True


class State(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    FORK_WAIT = "fork_wait"
    DECODE = "decode"


@dataclass(eq=False)
class Seq:
    id: SeqId
    tokens: list[int]
    max_tokens: int
    arrival: float
    state: State = State.WAITING
    slot: int = -1
    computed: int = 0
    pending: int | None = None
    generated: int = 0
    resume: bool = False
    cached: int = 0
    parent: Seq | None = None


@dataclass(eq=False)
class Slot:
    id: int
    cache: list[int] = field(default_factory=list)
    owner: Seq | None = None
    last_used: int = 0
    offloaded: bool = False  # ``cache`` lives in host memory, not in KV cells


@dataclass(frozen=True, slots=True)
class Step:
    """Tokens of one sequence in this batch; ``sample``: read logits after the last one."""

    seq: SeqId
    slot: int
    start: int
    tokens: tuple[int, ...]
    sample: bool


@dataclass(frozen=True, slots=True)
class Fork:
    """After the decode, copy ``parent``'s KV to ``child`` and sample it from the same logits."""

    parent: SeqId
    child: SeqId
    parent_slot: int
    child_slot: int


@dataclass(frozen=True, slots=True)
class Plan:
    trims: tuple[tuple[int, int], ...] = ()
    steps: tuple[Step, ...] = ()
    forks: tuple[Fork, ...] = ()
    admitted: tuple[SeqId, ...] = ()
    preempted: tuple[SeqId, ...] = ()
    # Done before anything else: idle slots whose cells go to host memory, then the
    # trims of slots not restored, then the restores, then the restored slots' trims.
    offloads: tuple[int, ...] = ()
    restores: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps and not self.trims and not self.offloads


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    """Admission, batching and KV bookkeeping for one llama.cpp context.

    >>> s = Scheduler(SchedulerConfig(n_slots=2, n_ctx=64, max_batch_tokens=16,
    ...                               prefill_chunk=8, max_queued=4))
    >>> s.add(1, [1, 2, 3], max_tokens=4, now=0.0)
    >>> [step.tokens for step in s.schedule().steps]
    [(1, 2, 3)]
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.slots = [Slot(i) for i in range(config.n_slots)]
        self.waiting: deque[list[Seq]] = deque()
        self.running: dict[SeqId, Seq] = {}
        self._clock = 0

    # -- queries ----------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def excess(self, n: int = 1) -> int:
        """How many sequences must leave the queue before ``n`` more fit in it (0: they
        fit now). Requests that a free slot takes at the next step are not queued."""
        free = sum(1 for slot in self.slots if slot.owner is None)
        waiting = sum(len(g) for g in self.waiting)
        return max(0, waiting + n - free - self.config.max_queued)

    @property
    def kv_cells_used(self) -> int:
        return sum(
            slot.owner.computed if slot.owner is not None
            else 0 if slot.offloaded else len(slot.cache)
            for slot in self.slots
        )

    # -- transitions ------------------------------------------------------------

    def add(self, request_id: int, prompt: list[int], *, max_tokens: int, now: float,
            n: int = 1) -> None:
        """Queue a request of ``n`` choices that share ``prompt``."""
        if not prompt:
            raise ValueError("empty prompt")
        if n > self.config.n_slots:
            raise PromptTooLong(f"n={n} exceeds the {self.config.n_slots} sequence slots")
        if n * (len(prompt) + max_tokens) > self.config.n_ctx:
            raise PromptTooLong(
                f"{len(prompt)} prompt tokens and {max_tokens} completion tokens per choice "
                f"for {n} choices do not fit in {self.config.n_ctx} KV cells"
            )
        excess = self.excess(n)
        if excess > 0:
            raise QueueFull(f"{len(self.waiting)} requests are already waiting for a slot",
                            excess=excess)
        group = [Seq((request_id, i), list(prompt), max_tokens, now) for i in range(n)]
        for child in group[1:]:
            child.parent = group[0]
        self.waiting.append(group)

    def expire(self, now: float, timeout: float) -> list[int]:
        """Drop queued requests that waited longer than ``timeout``; return their ids."""
        # A preempted request has already produced output; it is never dropped here.
        expired = [
            g[0].id[0]
            for g in self.waiting
            if now - g[0].arrival > timeout and not any(s.generated for s in g)
        ]
        if expired:
            gone = set(expired)
            self.waiting = deque(g for g in self.waiting if g[0].id[0] not in gone)
        return expired

    def abort(self, request_id: int) -> list[SeqId]:
        """Forget a request wherever it is; return the running seqs that were released."""
        self.waiting = deque(g for g in self.waiting if g[0].id[0] != request_id)
        ids = [sid for sid in self.running if sid[0] == request_id]
        self.finish(ids)
        return ids

    def schedule(self) -> Plan:
        trims: list[tuple[int, int]] = []
        preempted: list[SeqId] = []
        self._clock += 1
        # Running sequences grow by one cell per decode; make room first.
        decoding = [s for s in self.running.values() if s.state is State.DECODE]
        while decoding and self._free_cells() < len(decoding):
            if not self._evict_idle(trims):
                victim = max(self.running.values(), key=lambda s: (s.arrival, s.id))
                self._preempt(victim, trims)
                preempted.append(victim.id)
                decoding = [s for s in self.running.values() if s.state is State.DECODE]
        restores: list[int] = []
        admitted = self._admit(trims, restores)
        offloads = self._offload_idle(trims) if self.running else []
        steps: list[Step] = []
        for s in decoding:
            assert s.pending is not None
            steps.append(Step(s.id, s.slot, s.computed, (s.pending,), True))
        budget = self.config.max_batch_tokens - len(steps)
        if steps:
            budget = min(budget, self.config.prefill_chunk)
        budget = min(budget, self._free_cells() - len(steps))
        forks: list[Fork] = []
        prefilling = sorted(
            (s for s in self.running.values() if s.state is State.PREFILL),
            key=lambda s: (s.arrival, s.id),
        )
        for s in prefilling:
            if budget <= 0:
                break
            take = min(budget, len(s.tokens) - s.computed)
            chunk = tuple(s.tokens[s.computed : s.computed + take])
            done = s.computed + take == len(s.tokens)
            steps.append(Step(s.id, s.slot, s.computed, chunk, done and not s.resume))
            budget -= take
            if done and not s.resume:
                for child in self.running.values():
                    if child.parent is s and child.state is State.FORK_WAIT:
                        forks.append(Fork(s.id, child.id, s.slot, child.slot))
        return Plan(tuple(trims), tuple(steps), tuple(forks), tuple(admitted), tuple(preempted),
                    tuple(offloads), tuple(restores))

    def update(self, sampled: dict[SeqId, int], plan: Plan) -> None:
        """Record what the plan computed and the tokens sampled from it."""
        for step in plan.steps:
            s = self.running.get(step.seq)
            if s is None:
                continue
            if s.state is State.DECODE:
                s.tokens.append(step.tokens[0])
                s.computed += 1
                s.pending = None
            else:
                s.computed += len(step.tokens)
                if s.computed == len(s.tokens):
                    s.state = State.DECODE
                    s.resume = False
        for fork in plan.forks:
            child = self.running.get(fork.child)
            parent = self.running.get(fork.parent)
            if child is None:
                continue
            child.tokens = list(parent.tokens if parent is not None else child.tokens)
            child.computed = len(child.tokens)
            child.state = State.DECODE
        for seq_id, token in sampled.items():
            s = self.running.get(seq_id)
            if s is not None:
                s.pending = token
                s.generated += 1

    def finish(self, ids: list[SeqId]) -> None:
        """Release finished sequences; their slots keep the KV as a prefix cache."""
        for seq_id in ids:
            s = self.running.pop(seq_id, None)
            if s is None:
                continue
            slot = self.slots[s.slot]
            slot.owner = None
            slot.cache = s.tokens[: s.computed]
            slot.offloaded = False
            slot.last_used = self._clock

    # -- internals --------------------------------------------------------------

    def _free_cells(self) -> int:
        return self.config.n_ctx - self.kv_cells_used

    def _offload_idle(self, trims: list[tuple[int, int]]) -> list[int]:
        """Move idle caches that hold cells to host memory; drop the least recently used
        offloaded caches beyond ``n_ctx`` tokens in all. Returns the slots to offload."""
        if not self.config.offload_idle:
            return []
        offloads = []
        for slot in self.slots:
            if slot.owner is None and slot.cache and not slot.offloaded:
                slot.offloaded = True
                offloads.append(slot.id)
        held = sorted((s for s in self.slots if s.owner is None and s.offloaded),
                      key=lambda s: s.last_used)
        total = sum(len(s.cache) for s in held)
        for slot in held:
            if total <= self.config.n_ctx:
                break
            total -= len(slot.cache)
            slot.cache = []
            slot.offloaded = False
            trims.append((slot.id, 0))
        return offloads

    def _evict_idle(self, trims: list[tuple[int, int]], keep: list[Slot] | None = None) -> bool:
        """Drop the least recently used idle cache that holds cells (not one of ``keep``);
        False if none."""
        idle = [s for s in self.slots if s.owner is None and s.cache and not s.offloaded
                and s not in (keep or [])]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_used)
        victim.cache = []
        trims.append((victim.id, 0))
        return True

    def _preempt(self, seq: Seq, trims: list[tuple[int, int]]) -> None:
        """Drop a running sequence's KV and queue it first to be recomputed later."""
        group = sorted(
            (s for s in self.running.values() if s.id[0] == seq.id[0]), key=lambda s: s.id
        )
        started = any(s.generated for s in group)
        for s in group:
            del self.running[s.id]
            slot = self.slots[s.slot]
            slot.owner = None
            slot.cache = []
            trims.append((slot.id, 0))
            s.slot = -1
            s.computed = 0
            if started:
                s.parent = None  # each choice recomputes its own tokens
            s.state = State.WAITING
            s.resume = s.pending is not None
        self.waiting.appendleft(group)

    def _admit(self, trims: list[tuple[int, int]], restores: list[int]) -> list[SeqId]:
        admitted: list[SeqId] = []
        while self.waiting:
            group = self.waiting[0]
            free = [slot for slot in self.slots if slot.owner is None]
            if len(free) < len(group):
                break
            head = group[0]
            # The slot whose cache shares the longest prefix, when that is at least half of
            # the prompt or of the cache; else an empty slot, else the least recently used.
            # (A chat template's opening tokens are shared by every prompt: a slot chosen
            # for them alone would trade a whole cache for a handful of tokens.)
            best = max(
                free, key=lambda sl: (common_prefix(sl.cache, head.tokens), -sl.last_used)
            )
            shared = 2 * common_prefix(best.cache, head.tokens)
            if shared < len(head.tokens) and shared < len(best.cache):
                best = min(free, key=lambda sl: (bool(sl.cache), sl.last_used))
            reuse = min(common_prefix(best.cache, head.tokens), len(head.tokens) - 1)
            restore = best.offloaded and reuse > 0
            others = [sl for sl in sorted(free, key=lambda sl: sl.last_used) if sl is not best]
            chosen = [best, *others[: len(group) - 1]]
            # Cells this admission needs now: the rest of the prompt, plus copies for forks;
            # a restored cache comes back whole before its tail is trimmed.
            resident = 0 if best.offloaded else reuse
            needed = sum(len(s.tokens) for s in group) - resident
            if restore:
                needed += len(best.cache) - reuse
            reclaimable = sum(len(sl.cache) for sl in chosen if not sl.offloaded) - resident
            while self._free_cells() + reclaimable < needed + len(group):
                if not self._evict_idle(trims, keep=chosen):
                    return admitted
            self.waiting.popleft()
            for s, slot in zip(group, chosen, strict=True):
                keep = reuse if slot is best else 0
                if slot is best and restore:
                    restores.append(slot.id)
                if len(slot.cache) != keep:
                    trims.append((slot.id, keep))
                slot.cache = []
                slot.offloaded = False
                slot.owner = s
                slot.last_used = self._clock
                s.slot = slot.id
                s.computed = keep
                s.cached = keep
                s.state = State.FORK_WAIT if s.parent is not None else State.PREFILL
                self.running[s.id] = s
                admitted.append(s.id)
        return admitted
