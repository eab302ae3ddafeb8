"""The runner: executes generation on its own thread and hands text to asyncio.

llama.cpp calls made through ctypes release the GIL, so the event loop keeps
serving HTTP while a token is being decoded. Each job's events are delivered
with ``loop.call_soon_threadsafe`` into that job's ``asyncio.Queue``.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import queue
import threading
from dataclasses import dataclass, field

from kathan.engine.llama import LlamaContext, LlamaModel
from kathan.engine.sampling import Sampler
from kathan.engine.stops import StopMatcher
from kathan.engine.types import GenerationEvent, GenerationRequest

logger = logging.getLogger(__name__)

_SEQ = 0


@dataclass(eq=False)
class Job:
    """A request in flight: where its events go, and whether its client left."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def deliver(self, item: GenerationEvent | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Runner:
    """Serves jobs one after another on a dedicated thread.

    The KV cache keeps the tokens of the last sequence; a new prompt that
    shares a prefix with them reuses those cells instead of recomputing them.
    """

    def __init__(self, model: LlamaModel, ctx: LlamaContext) -> None:
        self._model = model
        self._ctx = ctx
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._cached: list[int] = []
        self._running = 0
        self._queued = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="kathan-runner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._queued += 1
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    @property
    def counts(self) -> tuple[int, int, int]:
        """(queued, running, KV cells in use)."""
        with self._lock:
            return self._queued, self._running, len(self._cached)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._queued -= 1
                self._running = 1
            try:
                if not job.cancelled.is_set():
                    self._serve(job)
            except Exception as exc:  # delivered to the request, never lost
                logger.exception("generation failed")
                self._ctx.remove(_SEQ)
                self._cached = []
                job.deliver(exc)
            finally:
                with self._lock:
                    self._running = 0

    def _prefill(self, job: Job) -> int:
        """Bring the KV cache to hold the prompt; return how many tokens were reused."""
        prompt = job.request.prompt
        ctx = self._ctx
        # At least the last prompt token is decoded again: its logits start generation.
        reuse = min(common_prefix(self._cached, prompt), len(prompt) - 1)
        ctx.remove(_SEQ, reuse, -1)
        del self._cached[reuse:]
        pos = reuse
        while pos < len(prompt):
            if job.cancelled.is_set():
                break
            chunk = prompt[pos : pos + ctx.n_batch]
            ctx.decode(chunk, pos, _SEQ)
            self._cached.extend(chunk)
            pos += len(chunk)
        return reuse

    def _serve(self, job: Job) -> None:
        request = job.request
        ctx = self._ctx
        model = self._model
        cached = self._prefill(job)
        prompt_tokens = len(request.prompt)
        sampler = Sampler(request.sampling, model.info.n_vocab)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(request.stop)
        pieces = model.pieces
        eog = model.eog
        n = 0
        try:
            while not job.cancelled.is_set():
                token = sampler.sample(ctx)
                n += 1
                finish: str | None = None
                if token in eog:
                    text, finish = decoder.decode(b"", final=True), "stop"
                else:
                    text = decoder.decode(pieces[token])
                text, stopped = stops.feed(text)
                if stopped:
                    finish = "stop"
                elif finish is None and (
                    n >= request.max_tokens or len(self._cached) >= ctx.n_ctx
                ):
                    finish = "length"
                if finish is not None:
                    if not stopped:
                        text += stops.feed(decoder.decode(b"", final=True))[0] + stops.flush()
                    job.deliver(
                        GenerationEvent(
                            text,
                            finish,
                            completion_tokens=n,
                            prompt_tokens=prompt_tokens,
                            cached_tokens=cached,
                        )
                    )
                    return
                if text:
                    job.deliver(GenerationEvent(text, completion_tokens=n))
                ctx.decode([token], len(self._cached), _SEQ)
                self._cached.append(token)
        finally:
            sampler.close()
