"""``LocalEngine``: the asyncio face of the local llama.cpp engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from kathan.engine.llama import LlamaContext, LlamaModel, init_backend
from kathan.engine.runner import Job, Runner
from kathan.engine.template import CHATML_TEMPLATE, ChatTemplate
from kathan.engine.types import EngineStats, GenerationEvent, GenerationRequest


@dataclass(frozen=True, slots=True)
class EngineConfig:
    gguf: Path
    n_ctx: int
    n_batch: int
    n_threads: int


class LocalEngine:
    """Loads a GGUF model and generates text for many callers, one sequence at a time.

    >>> engine = LocalEngine(config)
    >>> await asyncio.to_thread(engine.load)
    >>> async for event in engine.generate(request):
    ...     print(event.text, end="")
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._model: LlamaModel | None = None
        self._ctx: LlamaContext | None = None
        self._runner: Runner | None = None
        self.template: ChatTemplate | None = None

    @property
    def ready(self) -> bool:
        return self._runner is not None

    @property
    def model(self) -> LlamaModel:
        if self._model is None:
            raise RuntimeError("the engine is not loaded")
        return self._model

    @property
    def n_ctx(self) -> int:
        if self._ctx is None:
            raise RuntimeError("the engine is not loaded")
        return self._ctx.n_ctx

    def load(self, progress: Callable[[float], None] | None = None) -> None:
        """Load the model and start the runner thread. Blocking: call it off the event loop."""
        init_backend()
        model = LlamaModel(self.config.gguf, progress=progress)
        n_ctx = min(self.config.n_ctx, model.info.n_ctx_train or self.config.n_ctx)
        ctx = LlamaContext(
            model,
            n_ctx=n_ctx,
            n_batch=min(self.config.n_batch, n_ctx),
            n_threads=self.config.n_threads,
        )
        source = model.info.chat_template or CHATML_TEMPLATE
        self.template = ChatTemplate(
            source,
            bos_token=model.token_text(model.info.bos_token) if model.info.bos_token >= 0 else "",
            eos_token=model.token_text(model.info.eos_token) if model.info.eos_token >= 0 else "",
        )
        self._model, self._ctx = model, ctx
        runner = Runner(model, ctx)
        runner.start()
        self._runner = runner

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize a rendered chat prompt, adding BOS only if the template did not."""
        model = self.model
        bos = self.template.bos_token if self.template else ""
        add_bos = model.info.add_bos and not (bos and text.startswith(bos))
        return model.tokenize(text, add_special=add_bos, parse_special=True)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Yield text as it is generated. Closing the iterator early aborts the sequence."""
        if self._runner is None:
            raise RuntimeError("the engine is not loaded")
        job = Job(request, asyncio.get_running_loop())
        self._runner.submit(job)
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            job.cancelled.set()

    def stats(self) -> EngineStats:
        if self._runner is None or self._ctx is None:
            return EngineStats(queued=0, running=0, kv_cells_used=0, n_ctx=0)
        queued, running, cells = self._runner.counts
        return EngineStats(queued=queued, running=running, kv_cells_used=cells, n_ctx=self._ctx.n_ctx)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None
