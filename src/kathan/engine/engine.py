"""``LocalEngine``: the asyncio face of the local llama.cpp engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kathan.engine.embed import Embedder
from kathan.engine.llama import (
    POOLING_TYPES,
    LlamaContext,
    LlamaModel,
    PoolingContext,
    init_backend,
    pooling_type,
)
from kathan.engine.runner import Job, Runner
from kathan.engine.scheduler import Scheduler, SchedulerConfig
from kathan.engine.template import CHATML_TEMPLATE, ChatTemplate
from kathan.engine.types import EngineStats, GenerationEvent, GenerationRequest

# A deterministic context's batch: under llama.cpp's tiled-attention threshold (64), with
# room for its extra row.
DETERMINISTIC_MAX_BATCH = 32


@dataclass(frozen=True, slots=True)
class EngineConfig:
    gguf: Path
    n_ctx: int
    n_batch: int
    n_threads: int
    n_slots: int = 16
    max_queued: int = 64
    queue_timeout: float = 30.0
    prefill_chunk: int = 64
    deterministic: bool = False  # batch-invariant kernels (LlamaContext)
    embed_sequences: int = 64  # the most inputs one embedding decode packs
    chat: bool = True  # a generation context and runner (False: an embedding model)
    embeddings: bool = True  # a pooling context for embeddings
    pooling: str | None = None  # mean, cls, last; None: the GGUF's own, else mean


class LocalEngine:
    """Loads a GGUF model and generates for many callers at once (continuous batching).

    ``load`` blocks (run it off the event loop, e.g. with ``asyncio.to_thread``);
    after it, ``generate(request)`` yields the ``GenerationEvent``s of all the
    request's choices as they are generated, and ``embed(sequences)`` their embeddings.

    An engine with ``chat`` off (an embedding model) has no generation context and
    no runner; its pooling context is made at load. Otherwise the pooling context,
    if ``embeddings`` is on, is made at the first embeddings request.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._model: LlamaModel | None = None
        self._ctx: LlamaContext | None = None
        self._runner: Runner | None = None
        self._embedder: Embedder | None = None
        self._embed_n_ctx = 0
        self._loaded = False
        self.pooling: str | None = None  # the pooling type embeddings use, once loaded
        self.template: ChatTemplate | None = None

    @property
    def ready(self) -> bool:
        return self._loaded

    @property
    def model(self) -> LlamaModel:
        if self._model is None:
            raise RuntimeError("the engine is not loaded")
        return self._model

    @property
    def n_ctx(self) -> int:
        """The context's size in tokens (the pooling context's, for an embedding model)."""
        if self._ctx is not None:
            return int(self._ctx.n_ctx)
        if self._embed_n_ctx:
            return self._embed_n_ctx
        raise RuntimeError("the engine is not loaded")

    def load(self, progress: Callable[[float], None] | None = None) -> None:
        """Load the model and start the runner thread. Blocking: call it off the event loop."""
        init_backend()
        config = self.config
        model = LlamaModel(config.gguf, progress=progress)
        try:
            if config.chat:
                self._load_chat(model)
            if config.embeddings:
                self._load_embeddings(model)
        except BaseException:
            self._runner = None  # made, never started
            self.close()
            model.close()
            raise
        self._model = model
        if self._runner is not None:
            self._runner.start()
        self._loaded = True

    def _load_embeddings(self, model: LlamaModel) -> None:
        config = self.config
        pooling = pooling_type(config.pooling, model)
        self.pooling = next(name for name, code in POOLING_TYPES.items() if code == pooling)
        if self._ctx is not None:
            n_ctx, budget = self._ctx.n_ctx, self._ctx.n_batch
        else:
            # An embedding model (BERT's kin) has absolute positions: none past training.
            trained = model.info.n_ctx_train
            n_ctx = min(config.n_ctx, trained) if trained > 0 else config.n_ctx
            budget = min(config.n_batch, n_ctx)
        self._embedder = Embedder(
            lambda: PoolingContext(model, n_ctx=n_ctx, n_threads=config.n_threads,
                                   n_seq_max=config.embed_sequences, pooling=pooling),
            budget=budget,
        )
        if self._ctx is None:
            self._embed_n_ctx = int(self._embedder.open().n_ctx)

    def _load_chat(self, model: LlamaModel) -> None:
        config = self.config
        n_batch = min(config.n_batch, config.n_ctx)
        if config.deterministic:
            n_batch = min(n_batch, DETERMINISTIC_MAX_BATCH)
        ctx = LlamaContext(
            model,
            n_ctx=config.n_ctx,
            n_batch=n_batch,
            n_threads=config.n_threads,
            n_seq_max=config.n_slots,
            deterministic=config.deterministic,
        )
        source = model.info.chat_template or CHATML_TEMPLATE
        self.template = ChatTemplate(
            source,
            bos_token=model.token_text(model.info.bos_token) if model.info.bos_token >= 0 else "",
            eos_token=model.token_text(model.info.eos_token) if model.info.eos_token >= 0 else "",
        )
        scheduler = Scheduler(
            SchedulerConfig(
                n_slots=config.n_slots,
                n_ctx=ctx.n_ctx,
                max_batch_tokens=ctx.n_batch,
                prefill_chunk=min(config.prefill_chunk, ctx.n_batch),
                max_queued=config.max_queued,
                # Flash attention sums a token's keys in the order of their KV cells; a
                # cache put back from host memory may sit in other cells than it was
                # computed in, so a deterministic engine keeps idle caches in place.
                offload_idle=not config.deterministic,
            )
        )
        self._ctx = ctx
        self._runner = Runner(model, ctx, scheduler, queue_timeout=config.queue_timeout)

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize a rendered chat prompt, adding BOS only if the template did not."""
        model = self.model
        bos = self.template.bos_token if self.template else ""
        add_bos = model.info.add_bos and not (bos and text.startswith(bos))
        return model.tokenize(text, add_special=add_bos, parse_special=True)

    def tokenize_text(self, text: str) -> list[int]:
        """Tokenize plain text to embed: special-token markup in it is text, and the
        vocabulary's own BOS/EOS are added if it asks for them."""
        return self.model.tokenize(text, add_special=True, parse_special=False)

    async def embed(self, sequences: list[list[int]]) -> npt.NDArray[np.float32]:
        """The unit-length pooled embedding of each token sequence (rows in order),
        computed on the embedder's own thread and context. Each sequence must be
        non-empty, within the vocabulary and at most ``n_ctx`` tokens long."""
        if self._embedder is None:
            raise RuntimeError("the engine is not loaded")
        return await self._embedder.embed(sequences)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent]:
        """Yield text for every choice as it is generated.

        Raises ``EngineOverloaded`` or ``RequestTooLarge`` before the first
        event. Closing the iterator early aborts the request within one step.
        """
        runner = self._runner
        if runner is None:
            raise RuntimeError("the engine is not loaded, or has no chat")
        job = Job(request, asyncio.get_running_loop())
        runner.submit(job)
        remaining = request.n
        try:
            while remaining:
                item = await job.events.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    remaining -= 1
                yield item
        finally:
            if remaining:
                runner.cancel(job)

    def stats(self) -> EngineStats:
        runner, ctx = self._runner, self._ctx
        if runner is None or ctx is None:
            return EngineStats(0, 0, 0, 0, self.config.n_slots)
        queued, running, cells = runner.counts()
        return EngineStats(queued, running, cells, ctx.n_ctx, self.config.n_slots)

    def close(self) -> None:
        self._loaded = False
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None
