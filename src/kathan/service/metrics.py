"""Prometheus metrics, one registry per app (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kathan.backends.base import LoadStats

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class _EngineCollector(Collector):
    """Reads the engine's live state at scrape time."""

    def __init__(self, stats: Callable[[], list[tuple[str, LoadStats]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "queue_depth": GaugeMetricFamily(
                "kathan_queue_depth", "Requests waiting for a sequence slot.", labels=["model"]),
            "running": GaugeMetricFamily(
                "kathan_running_sequences", "Sequences being decoded.", labels=["model"]),
            "kv_used": GaugeMetricFamily(
                "kathan_kv_cells_used", "KV cache cells in use, prefix caches included.",
                labels=["model"]),
            "kv_total": GaugeMetricFamily(
                "kathan_kv_cells_total", "KV cache cells in the context.", labels=["model"]),
            "slots": GaugeMetricFamily(
                "kathan_sequence_slots", "Sequence slots (most sequences at once).",
                labels=["model"]),
        }
        for model, s in self._stats():
            gauges["queue_depth"].add_metric([model], s.queued)
            gauges["running"].add_metric([model], s.running)
            gauges["kv_used"].add_metric([model], s.kv_cells_used)
            gauges["kv_total"].add_metric([model], s.n_ctx)
            gauges["slots"].add_metric([model], s.n_slots)
        yield from gauges.values()


@dataclass(frozen=True, slots=True)
class _ModelMetrics:
    ttft: Histogram
    tpot: Histogram
    generated: Counter
    prompt: Counter
    prefix_hits: Counter
    prefix_tokens: Counter


class Metrics:
    """Counters and histograms for chat requests, tokens embedded, and the engine's
    gauges; every per-model series is labelled by the model's id."""

    def __init__(self, engine_stats: Callable[[], list[tuple[str, LoadStats]]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kathan_requests", "Model requests by endpoint (the path after /v1/) and HTTP "
            "status.", ["endpoint", "status"], registry=r)
        self.ttft = Histogram(
            "kathan_time_to_first_token_seconds", "Request start to first content.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram(
            "kathan_time_per_output_token_seconds", "Mean gap between output tokens.", ["model"],
            buckets=_TPOT_BUCKETS, registry=r)
        self.generated = Counter(
            "kathan_generated_tokens", "Completion tokens generated.", ["model"], registry=r)
        self.prompt = Counter(
            "kathan_prompt_tokens", "Prompt tokens processed or reused.", ["model"], registry=r)
        self.prefix_hits = Counter(
            "kathan_prefix_cache_hits", "Requests that reused cached prompt KV.", ["model"],
            registry=r)
        self.prefix_tokens = Counter(
            "kathan_prefix_cache_tokens", "Prompt tokens served from cached KV.", ["model"],
            registry=r)
        self.embedded = Counter(
            "kathan_embedded_tokens", "Tokens embedded (POST /v1/embeddings).", ["model"],
            registry=r)
        r.register(_EngineCollector(engine_stats))
        self._per_model: dict[str, _ModelMetrics] = {}
        self._per_status: dict[tuple[str, str], Counter] = {}

    def count_request(self, endpoint: str, status: str) -> None:
        """One answer of ``endpoint`` (``chat/completions``, ``responses``, ...) with this
        HTTP status (or "disconnected")."""
        child = self._per_status.get((endpoint, status))
        if child is None:
            child = self._per_status[endpoint, status] = self.requests.labels(endpoint, status)
        child.inc()

    def observe_completion(
        self, model: str, *, ttft: float | None, tpot: float | None,
        prompt: int, completion: int, cached: int,
    ) -> None:
        m = self._per_model.get(model)
        if m is None:
            # ``labels()`` looks the child up under a lock on every call; once per model is enough.
            m = self._per_model[model] = _ModelMetrics(
                self.ttft.labels(model), self.tpot.labels(model), self.generated.labels(model),
                self.prompt.labels(model), self.prefix_hits.labels(model),
                self.prefix_tokens.labels(model))
        if ttft is not None:
            m.ttft.observe(ttft)
        if tpot is not None:
            m.tpot.observe(tpot)
        m.generated.inc(completion)
        m.prompt.inc(prompt)
        if cached:
            m.prefix_hits.inc()
            m.prefix_tokens.inc(cached)

    def observe_embeddings(self, model: str, tokens: int) -> None:
        """One embeddings request of ``model`` that embedded ``tokens`` tokens."""
        self.embedded.labels(model).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
