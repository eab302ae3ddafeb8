"""Error bodies, for the OpenAPI schema. The values come from ``kathan.errors``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """``detail`` is a string, or for 422 a list of validation issues."""

    detail: str | list[ValidationIssue] | Any
    error: ErrorObject
