"""The runner: executes the scheduler's plans on its own thread.

Each step is one ``llama_decode`` holding the next token of every running
sequence plus a bounded chunk of prefill. ctypes releases the GIL during the
decode, so the event loop keeps serving HTTP. Text reaches each request's
``asyncio.Queue`` through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from kathan.engine.detokenize import Detokenizer
from kathan.engine.llama import LlamaContext, LlamaModel
from kathan.engine.sampling import Sampler
from kathan.engine.scheduler import Plan, PromptTooLong, QueueFull, Scheduler, SeqId
from kathan.engine.types import (
    EngineOverloaded,
    GenerationEvent,
    GenerationRequest,
    RequestTooLarge,
    TokenLogprob,
    TopLogprob,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """A request in flight: where its events go, and whether its client left."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    id: int = 0
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def deliver(self, item: GenerationEvent | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass(eq=False)
class _Choice:
    """Per-sequence state the runner keeps beside the scheduler's bookkeeping."""

    job: Job
    index: int
    sampler: Sampler
    text: Detokenizer = field(default_factory=lambda: Detokenizer(()))
    generated: int = 0
    cached: int = 0
    admitted: float = 0.0  # monotonic time it first got a slot (DrainEstimate)


class DrainEstimate:
    """How long until the queue has room: a refused request's ``Retry-After``.

    A fixed ``Retry-After`` sends clients back to a queue that is still full when
    admitted requests wait many seconds for a slot. While the queue is full every
    slot is busy, so sequences leave their slots at about ``running / mean time a
    sequence holds a slot`` per second (Little's law). The mean comes from the last
    ``keep`` sequences that finished, each timed from admission to its end, so time
    the engine sat idle and sequences that end in the same step do not skew it the
    way finishes per second would. One entry per finished sequence: nothing per token.

    >>> drain = DrainEstimate()
    >>> drain.wait(ahead=3, running=2) is None  # nothing finished yet: no estimate
    True
    >>> drain.finished(admitted=10.0, now=14.0)  # held a slot 4 s
    >>> drain.wait(ahead=3, running=2)  # 2 slots freeing every 4 s: 3 leave in 6 s
    6
    """

    MIN_SECONDS = 1
    MAX_SECONDS = 60

    def __init__(self, keep: int = 32) -> None:
        self._held: deque[float] = deque(maxlen=keep)

    def finished(self, admitted: float, now: float) -> None:
        """A sequence admitted at ``admitted`` ended at ``now`` (monotonic seconds)."""
        self._held.append(now - admitted)

    def wait(self, ahead: int, running: int) -> int | None:
        """Whole seconds (1 to 60) until ``ahead`` more sequences have left the queue
        while ``running`` hold slots; None before any sequence has finished."""
        if not self._held:
            return None
        mean = sum(self._held) / len(self._held)
        seconds = math.ceil(ahead * mean / max(running, 1))
        return max(self.MIN_SECONDS, min(self.MAX_SECONDS, seconds))


class Runner:
    """Owns the scheduler and the llama.cpp context; one thread drives both."""

    def __init__(
        self, model: LlamaModel, ctx: LlamaContext, scheduler: Scheduler, *, queue_timeout: float
    ) -> None:
        self._model = model
        self._ctx = ctx
        self._scheduler = scheduler
        self._queue_timeout = queue_timeout
        self._jobs: dict[int, Job] = {}
        self._choices: dict[SeqId, _Choice] = {}
        # Idle slots' KV cells, moved to host memory while other sequences run.
        self._offloaded: dict[int, ctypes.Array[ctypes.c_uint8]] = {}
        self._ids = itertools.count(1)
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kathan-runner", daemon=True)
        self.steps = 0
        # How long sequences held their slots lately: a refusal's Retry-After.
        self._drain = DrainEstimate()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise ``EngineOverloaded`` / ``RequestTooLarge`` at once."""
        request = job.request
        with self._cv:
            job.id = next(self._ids)
            try:
                self._scheduler.add(
                    job.id, request.prompt, max_tokens=request.max_tokens,
                    now=time.monotonic(), n=request.n,
                )
            except QueueFull as exc:
                raise EngineOverloaded(str(exc), retry_after=self._drain.wait(
                    exc.excess, len(self._scheduler.running))) from exc
            except PromptTooLong as exc:
                raise RequestTooLarge(str(exc)) from exc
            self._jobs[job.id] = job
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job's sequences at the next step (called when its client leaves)."""
        job.cancelled.set()
        with self._cv:
            self._cv.notify()

    def counts(self) -> tuple[int, int, int]:
        """(queued requests, running sequences, KV cells in use)."""
        with self._cv:
            s = self._scheduler
            return s.queued, len(s.running), s.kv_cells_used

    # -- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._jobs:
                    self._cv.wait()
                if self._stopping:
                    return
                self._reap()
                plan = self._scheduler.schedule()
                self._open_choices(plan)
            if plan.empty:
                # Work is queued but cannot be admitted yet: wait for a change.
                with self._cv:
                    self._cv.wait(timeout=0.05)
                continue
            try:
                sampled, finished = self._execute(plan)
            except Exception as exc:
                logger.exception("engine step failed")
                self._fail_all(exc)
                continue
            with self._cv:
                self._scheduler.update(sampled, plan)
                self._release(finished)
            self.steps += 1

    def _reap(self) -> None:
        """Drop cancelled jobs and jobs that waited too long in the queue. Holds the lock."""
        for job in [j for j in self._jobs.values() if j.cancelled.is_set()]:
            self._scheduler.abort(job.id)
            self._forget(job)
        for rid in self._scheduler.expire(time.monotonic(), self._queue_timeout):
            expired = self._jobs.get(rid)
            if expired is not None:
                # Asked again, it gets a slot once those still queued and its own
                # choices have left the queue.
                ahead = sum(len(g) for g in self._scheduler.waiting) + expired.request.n
                retry_after = self._drain.wait(ahead, len(self._scheduler.running))
                expired.deliver(EngineOverloaded(
                    f"the request waited {self._queue_timeout:g}s in the queue without a "
                    "free slot", retry_after=retry_after))
                self._forget(expired)

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        for index in range(job.request.n):
            choice = self._choices.pop((job.id, index), None)
            if choice is not None:
                choice.sampler.close()

    def _open_choices(self, plan: Plan) -> None:
        for seq_id in plan.admitted:
            if seq_id in self._choices:
                continue  # re-admitted after preemption: its state lives on
            job = self._jobs[seq_id[0]]
            request = job.request
            sampling = request.sampling
            if sampling.seed is not None and seq_id[1]:
                # Each choice gets its own seed, derived from the request's.
                sampling = sampling.with_seed(sampling.seed + seq_id[1])
            seq = self._scheduler.running[seq_id]
            self._choices[seq_id] = _Choice(
                job, seq_id[1], Sampler(sampling, self._model),
                text=Detokenizer(request.stop), cached=seq.cached,
                admitted=time.monotonic(),
            )

    def _move_caches(self, plan: Plan) -> None:
        """The plan's offloads, trims and restores, in the order ``Plan`` gives."""
        ctx = self._ctx
        for slot in plan.offloads:
            self._offloaded[slot] = ctx.save(slot)
            ctx.remove(slot)
        restored = set(plan.restores)
        for slot, keep in plan.trims:
            if slot not in restored:
                ctx.remove(slot, keep, -1)
                if keep == 0:
                    self._offloaded.pop(slot, None)
        for slot in plan.restores:
            ctx.restore(slot, self._offloaded.pop(slot))
        for slot, keep in plan.trims:
            if slot in restored:
                ctx.remove(slot, keep, -1)

    def _execute(self, plan: Plan) -> tuple[dict[SeqId, int], list[SeqId]]:
        ctx = self._ctx
        self._move_caches(plan)
        outputs = ctx.decode_steps(plan.steps) if plan.steps else []
        sampled: dict[SeqId, int] = {}
        finished: list[SeqId] = []
        index_of: dict[SeqId, int] = {}
        for step, out in zip(plan.steps, outputs, strict=True):
            if out < 0:
                continue
            index_of[step.seq] = out
            if self._sample(step.seq, out, sampled):
                finished.append(step.seq)
        for fork in plan.forks:
            ctx.copy(fork.parent_slot, fork.child_slot)
            if self._sample(fork.child, index_of[fork.parent], sampled):
                finished.append(fork.child)
        return sampled, finished

    def _sample(self, seq_id: SeqId, out: int, sampled: dict[SeqId, int]) -> bool:
        """Sample one token for a sequence; deliver its text; return True when it ended."""
        choice = self._choices.get(seq_id)
        if choice is None:
            return False
        job = choice.job
        if job.cancelled.is_set():
            return True
        request = job.request
        if request.halt is not None and choice.index in request.halt:
            # Ended by its consumer: whatever is pending is not wanted.
            job.deliver(GenerationEvent(
                "", choice.index, "stop", completion_tokens=choice.generated,
                prompt_tokens=len(request.prompt), cached_tokens=choice.cached,
            ))
            return True
        token = choice.sampler.sample(self._ctx, out)
        sampled[seq_id] = token
        choice.generated += 1
        logprobs = self._logprobs(out, token, request.logprobs)
        finish: str | None = None
        if token in self._model.eog:
            text, stopped, finish = "", False, "stop"
        else:
            text, stopped = choice.text.feed(self._model.pieces[token])
        if stopped:
            finish = "stop"
        elif finish is None and choice.generated >= request.max_tokens:
            finish = "length"
        if finish is not None and not stopped:
            text += choice.text.end()
        ids = (token,) if request.tokens else ()
        if finish is None:
            if text or logprobs or ids:
                # The counts so far ride along: a request cut short is charged them.
                job.deliver(GenerationEvent(
                    text, choice.index, logprobs=logprobs,
                    completion_tokens=choice.generated, prompt_tokens=len(request.prompt),
                    cached_tokens=choice.cached, tokens=ids,
                ))
            return False
        job.deliver(
            GenerationEvent(
                text,
                choice.index,
                finish,
                completion_tokens=choice.generated,
                prompt_tokens=len(request.prompt),
                cached_tokens=choice.cached,
                logprobs=logprobs,
                stop=choice.text.stopped_by if stopped else None,
                tokens=ids,
            )
        )
        return True

    def _logprobs(self, out: int, token: int, top: int | None) -> tuple[TokenLogprob, ...]:
        if top is None:
            return ()
        logits = self._ctx.logits(out).astype(np.float64)
        peak = logits.max()
        logsumexp = peak + np.log(np.exp(logits - peak).sum())
        pieces = self._model.pieces

        def entry(t: int) -> TopLogprob:
            raw = pieces[t]
            return TopLogprob(raw.decode("utf-8", errors="replace"), raw,
                              float(logits[t] - logsumexp))

        alternatives: tuple[TopLogprob, ...] = ()
        if top > 0:
            best = np.argpartition(-logits, top)[:top]
            best = best[np.argsort(-logits[best])]
            alternatives = tuple(entry(int(t)) for t in best)
        chosen = entry(token)
        return (TokenLogprob(chosen.token, chosen.bytes, chosen.logprob, alternatives),)

    def _release(self, finished: list[SeqId]) -> None:
        """Hand finished sequences back to the scheduler; forget completed jobs. Holds the lock."""
        self._scheduler.finish(finished)
        now = time.monotonic() if finished else 0.0
        for seq_id in finished:
            choice = self._choices.pop(seq_id, None)
            if choice is not None:
                choice.sampler.close()
                self._drain.finished(choice.admitted, now)
        for rid in {sid[0] for sid in finished}:
            job = self._jobs.get(rid)
            if job is None:
                continue
            if all((rid, i) not in self._choices for i in range(job.request.n)) and not any(
                s.id[0] == rid for g in self._scheduler.waiting for s in g
            ):
                self._jobs.pop(rid, None)

    def _fail_all(self, exc: Exception) -> None:
        """A decode failed: end every request in flight and start from an empty cache."""
        with self._cv:
            for job in list(self._jobs.values()):
                job.deliver(exc)
                self._scheduler.abort(job.id)
                self._forget(job)
            for slot in self._scheduler.slots:
                slot.cache = []
                slot.offloaded = False
                self._ctx.remove(slot.id)
            self._offloaded.clear()
