"""The one exception hierarchy. Raised anywhere, rendered once in ``kathan.api.errors``.

Every error renders with both shapes clients expect: OpenAI's ``error`` object
and the seeds' ``detail`` (a string, or for validation errors a list of
``{loc, msg, type}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class KathanError(Exception):
    """Base of every error Kathan reports to a client."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})

    @property
    def detail(self) -> Any:
        """The seeds' ``detail`` value."""
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            },
        }


class InternalServerError(KathanError):
    """500: a bug; the server log has the traceback."""

    default_code = "internal_error"

    def __init__(self, message: str = "Internal server error; the server log has the cause.") -> None:
        super().__init__(message)


class InvalidRequestError(KathanError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    """A parameter Kathan accepts on the wire but cannot honour for this model (yet)."""

    default_code = "unsupported_parameter"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class AuthenticationError(KathanError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str = "Invalid API key") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(KathanError):
    """403: a valid key that may not do this (a model outside its allow-list, a non-admin)."""

    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class ConflictError(KathanError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class RateLimitError(KathanError):
    """429: a key's limit is reached. ``limit`` names it (rpm, tpm, max_concurrent, quota)."""

    status_code = 429
    error_type = "rate_limit_exceeded"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})
        self.limit = limit
        self.retry_after = max(1, retry_after)


class NotFoundError(KathanError):
    status_code = 404
    error_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    """404 for a model name nobody serves. With ``available`` (the models the caller's
    key may use), the message lists them, a few at most, and says how one is added.

    >>> ModelNotFoundError("gpt-4", ["smollm2-135m-instruct"]).message.split(". ")[:2]
    ["The model 'gpt-4' does not exist", 'This key may use: smollm2-135m-instruct']
    """

    default_code = "model_not_found"
    LISTED = 8  # names shown before "and N more"

    def __init__(self, model: str, available: Sequence[str] | None = None) -> None:
        message = f"The model '{model}' does not exist"
        if available is not None:
            shown = ", ".join(available[: self.LISTED])
            more = len(available) - self.LISTED
            if more > 0:
                shown += f" and {more} more (GET /v1/models lists them all)"
            message += (f". This key may use: {shown or 'no model'}. "
                        "An operator adds a model under `models:` in the server's config "
                        "file, or serves a name from the local engine by adding it to "
                        "`local.aliases` (see kathan.example.yaml).")
        super().__init__(message, param="model")


class MethodNotAllowedError(KathanError):
    """405: the path exists, the method does not; ``Allow`` lists every method it has."""

    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: list[str]) -> None:
        accepts = f"; it accepts {', '.join(allowed)}" if allowed else ""
        super().__init__(
            f"{method} is not allowed on {path}{accepts}.",
            headers={"Allow": ", ".join(allowed)},
        )


class PayloadTooLargeError(KathanError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RequestValidationFailed(KathanError):
    """422: the body does not match the request schema."""

    status_code = 422
    error_type = "invalid_request_error"
    default_code = "validation_error"

    def __init__(
        self, errors: list[dict[str, Any]], *, message: str | None = None,
        param: str | None = None,
    ) -> None:
        """``errors`` are the ``detail`` items; ``message`` (which ``api.explain`` words
        from them) names the field and the reason, ``param`` the field."""
        self.errors = errors
        if message is None:
            first = errors[0] if errors else {"loc": [], "msg": "Invalid request"}
            param = ".".join(str(part) for part in first.get("loc", []) if part != "body")
            message = f"{param}: {first['msg']}" if param else str(first["msg"])
        super().__init__(message, param=param or None)

    @property
    def detail(self) -> Any:
        return self.errors


class ServiceUnavailableError(KathanError):
    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ModelNotReadyError(ServiceUnavailableError):
    default_code = "model_not_ready"


class ShuttingDownError(ServiceUnavailableError):
    """The server is stopping: a new request is refused, or one still running when the
    drain ended is cut (``service.drain``)."""

    default_code = "shutting_down"


class ClientDisconnected(KathanError):
    """The client left; nobody reads this response (499, as nginx logs it)."""

    status_code = 499
    error_type = "client_closed_request"


class EngineError(ServiceUnavailableError):
    """The inference engine failed while serving a request; the log has the cause."""

    error_type = "server_error"
    default_code = "engine_error"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)
