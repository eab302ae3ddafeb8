"""Wire models of accounts, API keys, login and usage (the self-service and admin APIs)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kathan.limits.base import Limits

Email = str
MAX_LIMIT = 2**31 - 1
_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsModel(_In):
    """A key's limits. Absent or null: unlimited."""

    # The store keeps limits in 32-bit integer columns (PostgreSQL's INTEGER).
    rpm: int | None = Field(None, ge=1, le=MAX_LIMIT, description="Requests per minute.")
    tpm: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description="Prompt + completion tokens per minute."
    )
    max_concurrent: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description="Requests in flight at once."
    )
    quota_tokens: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description="Tokens per quota period."
    )
    quota_period: Literal["day", "month"] | None = Field(None, description="UTC day or month.")
    max_tokens: int | None = Field(
        None, ge=1, le=MAX_LIMIT, description="The most max_tokens one request may ask "
        "(and what a request that gives none gets).")

    @model_validator(mode="after")
    def _quota_has_a_period(self) -> Self:
        if (self.quota_tokens is None) != (self.quota_period is None):
            raise ValueError("quota_tokens and quota_period go together")
        return self

    def to_limits(self) -> Limits:
        return Limits(self.rpm, self.tpm, self.max_concurrent, self.quota_tokens,
                      self.quota_period, self.max_tokens)

    @classmethod
    def of(cls, limits: Limits) -> LimitsModel:
        return cls(rpm=limits.rpm, tpm=limits.tpm, max_concurrent=limits.max_concurrent,
                   quota_tokens=limits.quota_tokens, quota_period=limits.quota_period,
                   max_tokens=limits.max_tokens)


class RegisterRequest(_In):
    email: Email = Field(pattern=_EMAIL, max_length=320)
    password: str = Field(min_length=8, max_length=256)
    name: str | None = Field(None, min_length=1, max_length=200)


class LoginRequest(_In):
    email: Email = Field(max_length=320)
    password: str = Field(max_length=256)


class Account(BaseModel):
    id: str
    object: Literal["account"] = "account"
    name: str
    email: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime
    limits: LimitsModel = Field(description="Limits given to keys the holder creates.")


class LoginResponse(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>` to /v1/keys.")
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    account: Account


class KeyCreateRequest(_In):
    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = Field(
        None, max_length=100, description="Models the key may use; null for all."
    )
    expires_at: datetime | None = None


class AdminKeyCreateRequest(KeyCreateRequest):
    account_id: str = Field(min_length=1, max_length=40)
    limits: LimitsModel | None = Field(None, description="Null: the account's limits.")


class KeyUpdateRequest(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    models: list[str] | None = Field(None, max_length=100)
    limits: LimitsModel | None = None
    expires_at: datetime | None = None


class ApiKey(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str = Field(description="The start of the key, for recognising it.")
    account_id: str
    models: list[str] | None
    limits: LimitsModel
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(ApiKey):
    key: str = Field(description="The key itself. Shown once: it is stored only as a hash.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKey]


class AccountCreateRequest(_In):
    name: str = Field(min_length=1, max_length=200)
    email: Email | None = Field(None, pattern=_EMAIL, max_length=320)
    password: str | None = Field(None, min_length=8, max_length=256)
    is_admin: bool = False
    limits: LimitsModel | None = None


class AccountUpdateRequest(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    disabled: bool | None = None
    limits: LimitsModel | None = None


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Account]


class UsageBucket(BaseModel):
    day: str
    model: str
    requests: int
    succeeded: int
    failed: int
    cancelled: int
    rate_limited: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageReport(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageBucket]
