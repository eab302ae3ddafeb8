"""What a configuration would serve: ``kathan models`` and ``kathan config check FILE``.

Nothing is loaded and no server needs to run: the model registry is built from
the settings exactly as ``serve`` builds it (so a configuration that cannot be
served fails here with the same reason), with a stand-in for the local engine.
``--probe`` then asks each upstream deployment for its models listing (the
request the router's health probe makes) and reports its answer.

Each local model's memory need is estimated from its GGUF file (``local_needs``):
the file, plus the KV cache of each context it will have (``engine/gguf.py``).
``kathan serve`` refuses to start when the sum exceeds the memory available
(``check_memory``), before anything loads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from kathan.backends.base import DeltaStream, LoadStats
from kathan.backends.upstream import ProviderBackend
from kathan.cli_config import ConfigFault
from kathan.engine.gguf import GGUFError, ModelShape, memory_available, model_shape
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.build import ConfigError, LocalModel, build_registry
from kathan.routing.router import Router
from kathan.settings import LocalModelSettings, Settings


class _Unloaded:
    """The local engine's stand-in: the registry is built, no model is loaded."""

    ready = False

    def check(self, request: ChatCompletionRequest) -> None:
        return None

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        raise RuntimeError("the local model is not loaded here")

    async def probe(self) -> bool:
        return False

    def stats(self) -> LoadStats | None:
        return None


@dataclass
class DeploymentRow:
    name: str  # "gpt-4#0", or "local"
    backend: str
    where: str  # the upstream's base URL and model name, or the GGUF file
    status: str
    ok: bool = True  # False: this deployment cannot serve (as configured, or as probed)
    router: Router | None = None
    index: int = 0


@dataclass
class ModelRow:
    id: str
    aliases: tuple[str, ...]
    served: bool
    deployments: list[DeploymentRow] = field(default_factory=list)


@dataclass(frozen=True)
class LocalNeed:
    """What one local model will take in memory: its file (mapped, shared by the models
    that load the same file) and the KV cache of each of its contexts, plus, for a chat
    model that is not deterministic, up to ``n_ctx`` tokens of idle caches' host copies."""

    model: LocalModelSettings
    path: Path
    shape: ModelShape
    file_bytes: int
    contexts: int  # KV caches: chat's, its idle caches' host copies, the pooling one
    n_ctx: int

    @property
    def kv_bytes(self) -> int:
        return self.contexts * self.shape.kv_bytes(self.n_ctx)

    @property
    def serves(self) -> str:
        declared = {1: "mean", 2: "cls", 3: "last"}.get(self.shape.pooling or 0, "mean")
        return " + ".join((["chat"] if self.model.chat else []) + (
            [f"embeddings ({self.model.pooling or declared} pooling)"]
            if self.model.embeddings else []))


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def local_needs(settings: Settings) -> list[LocalNeed]:
    """Each local model's file and memory need, read from its GGUF's metadata; a
    ``ConfigFault`` for a file that is missing or unreadable, or an encoder model (its
    attention not causal: BERT and its kin) configured to chat."""
    from kathan.app import ModelFileError, model_path

    where = f"{settings.config_file}: " if settings.config_file is not None else ""
    needs = []
    for i, model in enumerate(settings.local_models):
        try:
            path = model_path(model)
            shape = model_shape(path)
        except ModelFileError as exc:
            raise ConfigFault(str(exc).rstrip(".")) from None
        except (GGUFError, OSError) as exc:
            raise ConfigFault(f"{where}{settings.local_path(i)}.gguf: {exc}") from None
        if model.chat and not shape.causal:
            raise ConfigFault(
                f"{where}{settings.local_path(i)}: {path.name} is an embedding model ("
                f"{shape.architecture}, its attention is not causal), which cannot chat: "
                "set chat: false")
        n_ctx = model.n_ctx
        if not model.chat and shape.trained_ctx:
            n_ctx = min(n_ctx, shape.trained_ctx)  # as the engine caps it
        chat = (1 if model.deterministic else 2) if model.chat else 0
        needs.append(LocalNeed(model, path, shape, path.stat().st_size,
                               chat + int(model.embeddings), n_ctx))
    return needs


def check_memory(needs: Sequence[LocalNeed], available: int | None = None) -> None:
    """A ``ConfigFault`` when the local models need more memory than is available
    (MemAvailable, unless ``available`` is given): one line with each model's numbers."""
    if available is None:
        available = memory_available()
    if available is None or not needs:
        return
    files = {need.path.resolve(): need.file_bytes for need in needs}
    total = sum(files.values()) + sum(need.kv_bytes for need in needs)
    if total <= available:
        return
    parts = [f"{n.model.id} {_size(n.file_bytes)} file + {_size(n.kv_bytes)} KV cache "
             f"({n.contexts} x n_ctx {n.n_ctx} x {n.shape.kv_per_token} K/V values a token "
             "x 2 bytes)" for n in needs]
    shared = " (a file that several models load is counted once)" if len(files) < len(needs) else ""
    raise ConfigFault(
        f"the local models need about {_size(total)} of memory, but {_size(available)} is "
        f"available (MemAvailable): {'; '.join(parts)}{shared}. Lower n_ctx, serve fewer "
        "models, or set memory_check: false to start anyway")


async def plan(settings: Settings, session: aiohttp.ClientSession) -> list[ModelRow]:
    """Every model the settings configure, and how each deployment would be reached; a
    ``ConfigFault`` when they cannot be served."""
    local = [LocalModel(m, _Unloaded()) for m in settings.local_models]
    try:
        registry, routers = build_registry(settings, local=local, session=session)
    except ConfigError as exc:
        where = f"{settings.config_file}: " if settings.config_file is not None else ""
        raise ConfigFault(f"{where}{exc}") from None
    served = {entry.id for entry in registry.entries}
    by_model = {router.model_id: router for router in routers}
    rows: list[ModelRow] = []
    for need in local_needs(settings):
        status = (f"file found ({_size(need.file_bytes)}), needs about "
                  f"{_size(need.file_bytes + need.kv_bytes)}: {need.serves}")
        rows.append(ModelRow(need.model.id, tuple(need.model.aliases), need.model.id in served,
                             [DeploymentRow("local", "local", str(need.path), status)]))
    for model in settings.models:
        router = by_model.get(model.id)
        row = ModelRow(model.id, tuple(model.aliases), model.id in served)
        routed = {route.deployment.name: (router, i)
                  for i, route in enumerate(router.routes)} if router is not None else {}
        for i, d in enumerate(model.deployments):
            name = f"{model.id}#{i}"
            if d.backend == "local":
                ids = [m.id for m in settings.local_models if d.model in (None, m.id, *m.aliases)]
                local_id = ids[0] if ids else "off"
                row.deployments.append(DeploymentRow(name, "local", f"local engine ({local_id})",
                                                     "local engine"))
                continue
            where = f"{d.base_url} ({d.model or model.id})"
            deployment = DeploymentRow(name, d.backend, where, "no key needed")
            if d.api_key_env is not None:
                try:
                    d.api_key()
                    deployment.status = f"key from ${d.api_key_env}"
                except ValueError:
                    left_out = ": left out (if_key_set)" if d.if_key_set else ""
                    deployment.status = f"${d.api_key_env} is not set{left_out}"
                    deployment.ok = False
            if name in routed:
                deployment.router, deployment.index = routed[name]
            elif deployment.ok:
                deployment.status, deployment.ok = "not served", False
            row.deployments.append(deployment)
        rows.append(row)
    return rows


async def probe(rows: Sequence[ModelRow], session: aiohttp.ClientSession) -> None:
    """Ask every served upstream deployment for its models listing, all at once, and
    put the answer in its status."""
    targets = [d for row in rows for d in row.deployments if d.router is not None]
    await asyncio.gather(*(_probe_one(d, session) for d in targets))


async def _probe_one(row: DeploymentRow, session: aiohttp.ClientSession) -> None:
    assert row.router is not None
    route = row.router.routes[row.index]
    backend = route.backend
    if not isinstance(backend, ProviderBackend):
        return
    url, headers = backend.probe_request
    timeout = aiohttp.ClientTimeout(total=route.deployment.connect_timeout + 5)
    try:
        async with session.get(url, headers=dict(headers), allow_redirects=False,
                               timeout=timeout) as response:
            status = response.status
    except TimeoutError:
        row.status, row.ok = f"{row.status}; no answer within {timeout.total:g} s", False
        return
    except (aiohttp.ClientError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        row.status, row.ok = f"{row.status}; unreachable: {reason}", False
        return
    if status < 300:
        row.status = f"{row.status}; answers (HTTP {status})"
    elif status in (401, 403):
        row.status, row.ok = f"{row.status}; the key is refused (HTTP {status})", False
    else:
        row.status, row.ok = f"{row.status}; answers HTTP {status}", status < 500


def table(rows: Sequence[ModelRow]) -> str:
    lines = [["MODEL", "ALIASES", "DEPLOYMENT", "BACKEND", "WHERE", "STATUS"]]
    for row in rows:
        first = True
        for d in row.deployments:
            model = row.id if row.served else f"{row.id} (not served)"
            lines.append([model if first else "", ",".join(row.aliases) if first else "",
                          d.name, d.backend, d.where, d.status])
            first = False
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines) + "\n"


async def report(settings: Settings, *, with_probe: bool) -> tuple[list[ModelRow], str]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        rows = await plan(settings, session)
        if with_probe:
            await probe(rows, session)
    return rows, table(rows)
