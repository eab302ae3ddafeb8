"""Tables. Keys and session tokens are stored only as SHA-256 digests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class LimitColumns:
    """Limits a key enforces; an account's values are the defaults of keys its holder creates."""

    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    quota_tokens: Mapped[int | None] = mapped_column(Integer)
    quota_period: Mapped[str | None] = mapped_column(String(8))  # "day" | "month"


class Account(LimitColumns, Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # acct_<hex>
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))  # argon2
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(LimitColumns, Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # key_<hex>
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The public start of the key ("sk-kathan-ab12cd34"): unique, for lookup and display.
    prefix: Mapped[str] = mapped_column(String(40), unique=True)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole key
    models: Mapped[list[str] | None] = mapped_column(JSON)  # allow-list; None = all
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginSession(Base):
    """A token from POST /v1/auth/login, for managing one's own keys."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(40), unique=True)
    digest: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsageRecord(Base):
    """One row per model request (every endpoint), whatever its outcome."""

    __tablename__ = "usage"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the request id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    day: Mapped[str] = mapped_column(String(10), index=True)  # UTC "YYYY-MM-DD"
    # The API it came through: its path after /v1/ ("chat/completions", "responses",
    # "messages", "completions", "embeddings").
    endpoint: Mapped[str] = mapped_column(String(32), default="chat/completions")
    account_id: Mapped[str | None] = mapped_column(String(40), index=True)
    key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    key_prefix: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    # succeeded | failed | cancelled | rate_limited
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))


class StoredResponse(Base):
    """A response of ``POST /v1/responses`` with ``store: true``, for ``GET``, ``DELETE``
    and ``previous_response_id``; only its owner sees it."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # resp_<hex>
    # The caller's account, or "static" for the keys of KATHAN_API_KEYS (admins).
    owner: Mapped[str] = mapped_column(String(48), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The conversation's items before this response's output: the continued response's
    # items and output, then this request's input (Responses' item shape).
    items: Mapped[list[dict[str, object]]] = mapped_column(JSON)
    response: Mapped[dict[str, object]] = mapped_column(JSON)  # the response object
