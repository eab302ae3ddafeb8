"""What a configuration would serve: ``kathan models`` and ``kathan config check FILE``.

Nothing is loaded and no server needs to run: the model registry is built from
the settings exactly as ``serve`` builds it (so a configuration that cannot be
served fails here with the same reason), with a stand-in for the local engine.
``--probe`` then asks each upstream deployment for its models listing (the
request the router's health probe makes) and reports its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from kathan.backends.base import DeltaStream, LoadStats
from kathan.backends.upstream import ProviderBackend
from kathan.cli_config import ConfigFault
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.build import ConfigError, build_registry
from kathan.routing.router import Router
from kathan.settings import Settings


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


def _local_file(settings: Settings) -> tuple[str, str]:
    from kathan.app import ModelFileError, model_path

    assert settings.local is not None
    try:
        path = model_path(settings.local)
    except ModelFileError as exc:
        raise ConfigFault(str(exc).rstrip(".")) from None
    return str(path), f"file found ({path.stat().st_size / 2**20:.0f} MiB)"


async def plan(settings: Settings, session: aiohttp.ClientSession) -> list[ModelRow]:
    """Every model the settings configure, and how each deployment would be reached; a
    ``ConfigFault`` when they cannot be served."""
    local = None if settings.local is None else _Unloaded()
    try:
        registry, routers = build_registry(
            settings, local=local, local_created=0, session=session)  # type: ignore[arg-type]
    except ConfigError as exc:
        where = f"{settings.config_file}: " if settings.config_file is not None else ""
        raise ConfigFault(f"{where}{exc}") from None
    served = {entry.id for entry in registry.entries}
    by_model = {router.model_id: router for router in routers}
    rows: list[ModelRow] = []
    if settings.local is not None:
        path, found = _local_file(settings)
        rows.append(ModelRow(settings.local.id, tuple(settings.local.aliases),
                             settings.local.id in served,
                             [DeploymentRow("local", "local", path, found)]))
    for model in settings.models:
        router = by_model.get(model.id)
        row = ModelRow(model.id, tuple(model.aliases), model.id in served)
        routed = {route.deployment.name: (router, i)
                  for i, route in enumerate(router.routes)} if router is not None else {}
        for i, d in enumerate(model.deployments):
            name = f"{model.id}#{i}"
            if d.backend == "local":
                local_id = settings.local.id if settings.local is not None else "off"
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
