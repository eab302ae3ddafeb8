"""Wire models of accounts, API keys, login and usage (the self-service and admin APIs).

What the request models accept is what their JSON Schema (the OpenAPI document) says:
booleans are JSON booleans, counts JSON integers, times RFC 3339 strings, names
printable text with at least one character that is not a space, and every pattern is
written with explicit character classes, so that Python, Rust (pydantic) and
ECMAScript (the schema's readers) agree on what matches.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from kathan.limits.base import Limits

Email = str
MAX_LIMIT = 2**31 - 1
# C0 and C1 control characters (tab, newline and NEL among them) and DEL.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
# The other characters Python's str.strip() removes (and the BOM, which ECMAScript's \s has).
_SPACE = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# Printable text with at least one visible character: what repo._text keeps unchanged
# (but for the spaces it trims at the ends) and never finds empty.
NAME = rf"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"
_EMAIL = rf"^[^@{_CONTROL}{_SPACE}]{{1,64}}@[^@{_CONTROL}{_SPACE}]{{1,255}}$"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _count(value: Any) -> Any:
    # pydantic's lax int takes true and "5"; JSON Schema's integer does not (5.0 it does).
    if isinstance(value, bool) or not isinstance(value, int | float):
        # A ValueError: pydantic turns it into a validation error (a TypeError escapes).
        raise ValueError("must be a JSON integer")  # noqa: TRY004
    return value


def _time(value: Any) -> Any:
    # pydantic parses 0 or "0" as a Unix time, and a time without an offset.
    if not isinstance(value, str) or not _TIME.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, "
                         "such as 2030-01-01T00:00:00Z")
    return value


def _day(value: Any) -> Any:
    if not isinstance(value, str) or not _DAY.match(value):
        raise ValueError("must be a date, YYYY-MM-DD")
    return value


# The store keeps limits in 32-bit integer columns (PostgreSQL's INTEGER).
Count = Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_count)]
Time = Annotated[datetime, BeforeValidator(_time)]
# A query parameter's day: the schema says format "date" with this pattern.
Day = Annotated[date, BeforeValidator(_day)]
DAY_PATTERN = _DAY.pattern
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME)]
ModelName = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# quota_tokens and quota_period, both or neither (null counts as absent), in JSON Schema.
_QUOTA_PAIR: dict[str, Any] = {"anyOf": [
    {"properties": {"quota_tokens": {"type": "null"}, "quota_period": {"type": "null"}}},
    {"required": ["quota_tokens", "quota_period"],
     "properties": {"quota_tokens": {"type": "integer"}, "quota_period": {"type": "string"}}},
]}


class LimitsModel(_In):
    """A key's limits. Absent or null: unlimited. quota_tokens and quota_period go
    together: both or neither."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_QUOTA_PAIR)

    rpm: Count | None = Field(None, description="Requests per minute.")
    tpm: Count | None = Field(
        None, description="Prompt + completion tokens per minute."
    )
    max_concurrent: Count | None = Field(
        None, description="Requests in flight at once."
    )
    quota_tokens: Count | None = Field(
        None, description="Tokens per quota period."
    )
    quota_period: Literal["day", "month"] | None = Field(None, description="UTC day or month.")
    max_tokens: Count | None = Field(
        None, description="The most max_tokens one request may ask "
        "(and what a request that gives none gets).")

    @model_validator(mode="after")
    def _quota_has_a_period(self) -> Self:
        if (self.quota_tokens is None) != (self.quota_period is None):
            raise ValueError("quota_tokens and quota_period go together: give both (a "
                             "token count and 'day' or 'month') or neither")
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
    name: Name | None = None


class LoginRequest(_In):
    email: Email = Field(max_length=320, pattern=_EMAIL)
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


class BrowserSession(BaseModel):
    """The console's session: who is logged in, until when, and the CSRF token its
    state-changing requests must send in ``X-CSRF-Token``."""

    account: Account
    expires_at: datetime
    csrf_token: str = Field(description="Send as `X-CSRF-Token` with every POST, PATCH "
                            "and DELETE made with the session cookie.")


class AuthConfig(BaseModel):
    registration: Literal["open", "closed"]
    session_seconds: int


class Quota(BaseModel):
    key_id: str | None = Field(description="Null: the console playground, which runs "
                               "under the account's own limits.")
    name: str
    quota_tokens: int
    quota_period: Literal["day", "month"]
    period_start: str = Field(description="The first UTC day of the current period.")
    used_tokens: int


class AccountOverview(BaseModel):
    account: Account
    quotas: list[Quota]


class KeyCreateRequest(_In):
    name: Name
    models: list[ModelName] | None = Field(
        None, max_length=100, description="Models the key may use (ids or aliases this "
        "server serves); null for all."
    )
    expires_at: Time | None = Field(None, description="In the future.")


class AdminKeyCreateRequest(KeyCreateRequest):
    account_id: str = Field(min_length=1, max_length=40)
    limits: LimitsModel | None = Field(None, description="Null: the account's limits.")


class KeyUpdateRequest(_In):
    name: Name | None = None
    models: list[ModelName] | None = Field(
        None, max_length=100, description="Ids or aliases this server serves; null for all.")
    limits: LimitsModel | None = None
    expires_at: Time | None = Field(None, description="In the future; null: never.")


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
    last_used_at: datetime | None = Field(
        None, description="When the key's latest request began (null: never used).")


class CreatedApiKey(ApiKey):
    key: str = Field(description="The key itself. Shown once: it is stored only as a hash.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKey]


class AccountCreateRequest(_In):
    name: Name
    email: Email | None = Field(None, pattern=_EMAIL, max_length=320)
    password: str | None = Field(None, min_length=8, max_length=256)
    is_admin: bool = Field(False, strict=True)
    limits: LimitsModel | None = None


class AccountUpdateRequest(_In):
    name: Name | None = None
    disabled: bool | None = Field(None, strict=True)
    limits: LimitsModel | None = None


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Account]


Endpoint = Literal["chat/completions", "responses", "messages", "completions", "embeddings"]


class UsageBucket(BaseModel):
    day: str
    model: str
    endpoint: str = Field(description="The API the requests came through: its path after "
                          "/v1/ (`chat/completions`, `responses`, `messages`, `completions`, "
                          "`embeddings`).")
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
