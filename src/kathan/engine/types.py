"""Values that cross the engine's boundary."""

from __future__ import annotations

from dataclasses import dataclass

from kathan.engine.sampling import SamplingParams


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate: a tokenized prompt and how to continue it."""

    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationEvent:
    """New text for one sequence. The last event of a sequence has ``finish_reason``."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class EngineStats:
    queued: int
    running: int
    kv_cells_used: int
    n_ctx: int
