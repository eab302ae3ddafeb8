"""What every upstream (remote provider) backend shares: its deployment and its errors.

A provider backend (``openai``, ``anthropic``, ``gemini``) is a ``Backend``:
``open(request)`` sends the request upstream and returns the stream of
``Delta``s once the upstream has answered with a success status, or raises
an ``UpstreamError`` before any output exists. Provider backends translate
and relay; balancing, retries, fallback and circuit breaking are the
router's (``kathan.routing``). How a stream that fails after a success status
is reported is ``kathan.backends.relay``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from kathan.backends.base import LoadStats
from kathan.backends.transport import Endpoint, Response, UpstreamMaybeReceivedError
from kathan.errors import KathanError, UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest

BackendKind = Literal["local", "openai", "anthropic", "gemini"]

MAX_ERROR_BODY = 64 * 1024  # of a non-2xx answer, read for the upstream's words


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model is served: a provider endpoint and the model's name there."""

    backend: BackendKind
    model: str  # the upstream's model name
    base_url: str = ""
    api_key: str | None = None  # already read from the environment variable named in config
    weight: float = 1.0
    max_in_flight: int = 64
    connect_timeout: float = 5.0
    read_timeout: float = 120.0  # longest silence between two bytes of a response
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""  # for logs and metrics, e.g. "gpt-4#0"
    default_max_tokens: int | None = None  # sent for a request that gives no max_tokens


class ProviderBackend:
    """What every provider backend shares (``openai``, ``anthropic``, ``gemini``): it is
    ready whenever Kathan is (its upstream's health is the router's business), has no
    load of its own to report, and ``probe``s its upstream's models listing with the
    ``_probe`` URL and headers its constructor set."""

    deployment: Deployment
    _session: aiohttp.ClientSession
    _probe: tuple[str, Mapping[str, str]]

    @property
    def ready(self) -> bool:
        return True

    def stats(self) -> LoadStats | None:
        return None

    async def probe(self) -> bool:
        url, headers = self._probe
        return await probe(self._session, url, headers, self.deployment.connect_timeout)

    @property
    def probe_request(self) -> tuple[str, Mapping[str, str]]:
        """The URL and headers ``probe`` GETs (``kathan models --probe`` reports the status)."""
        return self._probe


class UpstreamError(KathanError):
    """The upstream failed, or refused the request. Each kind is a class with its own
    status (``KathanError``'s rule); what varies per instance is what the router needs:

    ``retryable``: another attempt (here or on another deployment) may succeed: a
    connection failure before anything was sent, a timeout, 429, 5xx, or a stream
    that failed before its first event. Otherwise the answer is final.
    ``retry_after``: seconds for the client's ``Retry-After``.
    ``upstream_status``: the upstream's HTTP status, None for a transport failure.
    """

    status_code = 503
    error_type = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        upstream_status: int | None = None,
        retry_after: int | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(message, param=param, code=code, headers=headers)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """503: the upstream cannot answer (unreachable, failing, misconfigured)."""


class UpstreamConnectionLost(UpstreamUnavailable):
    """503: the connection broke after the request went out and before any answer. The
    upstream may have received the request and may be running (and billing) it, so
    it is sent nowhere again: not retried, not passed to a fallback model."""


class UpstreamRateLimited(UpstreamError):
    """429: the upstream is rate limiting (passed on when no deployment is left)."""

    status_code = 429
    error_type = "rate_limit_exceeded"


class UpstreamRejected(UpstreamError):
    """The upstream refused the request itself: its answer is the client's, with the
    same status (subclasses per status)."""

    status_code = 400
    error_type = "invalid_request_error"


class UpstreamBadRequest(UpstreamRejected):
    status_code = 400


class UpstreamNotFound(UpstreamRejected):
    status_code = 404
    error_type = "not_found_error"


class UpstreamTooLarge(UpstreamRejected):
    status_code = 413


class UpstreamUnprocessable(UpstreamRejected):
    status_code = 422


_REJECTED: dict[int, type[UpstreamRejected]] = {
    400: UpstreamBadRequest, 404: UpstreamNotFound, 413: UpstreamTooLarge,
    422: UpstreamUnprocessable,
}


def error_for_status(
    status: int,
    message: str,
    *,
    retry_after: int | None = None,
    param: str | None = None,
    location: str | None = None,
) -> UpstreamError:
    """The Kathan error for an upstream's non-2xx answer, with a clear message.

    - 3xx: a redirect (to ``location``), which Kathan does not follow: a 503 that
      says where it points, for the operator to fix the deployment's base_url.
    - 400, 404, 413, 422: the request's own fault; passed on with the upstream's message.
    - 401, 403: Kathan's credentials for the upstream are wrong: a 503 for the
      client (its own key was fine), not retryable on the same deployment.
    - 408, 409, 425, 429, 5xx: retryable. 429 stays 429 for the client when no
      deployment is left; the others become 503.
    """
    if 300 <= status < 400:
        where = f" (a redirect to {location[:500]})" if location else ""
        return UpstreamUnavailable(
            f"The upstream answered {status}{where}; Kathan does not follow redirects: set "
            "the deployment's base_url to the server itself.",
            retryable=False, upstream_status=status, retry_after=retry_after or 30,
            code="upstream_redirect",
        )
    rejected = _REJECTED.get(status)
    if rejected is not None:
        return rejected(
            f"The upstream refused the request: {message}", retryable=False,
            upstream_status=status, param=param, code="upstream_rejected",
        )
    if status in (401, 403):
        return UpstreamUnavailable(
            f"The upstream rejected Kathan's credentials ({status}); the operator must fix "
            "the deployment's API key.", retryable=False,
            upstream_status=status, retry_after=retry_after or 30, code="upstream_auth_failed",
        )
    if status == 429:
        return UpstreamRateLimited(
            f"The upstream is rate limiting: {message}", retryable=True,
            upstream_status=status, retry_after=retry_after or 1, code="upstream_rate_limited",
        )
    return UpstreamUnavailable(
        f"The upstream failed ({status}): {message}", retryable=True,
        upstream_status=status, retry_after=retry_after or 1, code="upstream_error",
    )


def transport_error(what: str) -> UpstreamError:
    """A connection failure or a timeout before the response began."""
    return UpstreamUnavailable(
        f"The upstream could not be reached: {what}", retryable=True,
        retry_after=1, code="upstream_unreachable",
    )


def refuse_unsupported(
    checks: Iterable[tuple[bool, str]], *, backend: str, model: str
) -> None:
    """Raise a 400 naming the first field whose check failed (``(failed, field)`` pairs)."""
    for failed, name in checks:
        if failed:
            raise UnsupportedParameterError(
                f"'{name}' is not supported by the {backend} backend (model '{model}').",
                param=name,
            )


def refuse_extras(request: ChatCompletionRequest, backend: str) -> None:
    """A 400 for provider extras (fields Kathan does not know), which only
    OpenAI-compatible deployments receive as sent."""
    if request.model_extra:
        extra = next(iter(request.model_extra))
        raise UnsupportedParameterError(
            f"'{extra}' is not a parameter the {backend} backend knows; "
            "provider extras pass through only to OpenAI-compatible deployments.",
            param=extra,
        )


def retry_after_of(response: Response) -> int | None:
    """An upstream's ``Retry-After`` in whole seconds (at least 1), when it sent a number."""
    try:
        return max(1, int(float(response.headers.get("Retry-After", ""))))
    except (ValueError, OverflowError):
        return None


def refused(response: Response, message: str) -> UpstreamError:
    """``error_for_status`` for a non-2xx ``response``, with its ``Retry-After`` and
    ``Location``."""
    return error_for_status(response.status, message, retry_after=retry_after_of(response),
                            location=response.headers.get("Location"))


Refusal = Callable[[Response, bytes], UpstreamError]


async def send(endpoint: Endpoint, body: bytes, deployment: Deployment,
               refusal: Refusal) -> Response:
    """POST ``body``: the response when its status is 2xx; otherwise raises what
    ``refusal`` makes of the response and its body (``error_body``). A connection
    failure or a timeout before the status line is ``transport_error`` (retryable: the
    router may try another deployment; after a timeout Kathan has closed the
    connection, which tells the upstream to stop); a connection that broke after
    the request went out is final (``upstream_connection_lost``)."""
    d = deployment
    try:
        response = await endpoint.post(body, connect_timeout=d.connect_timeout,
                                       read_timeout=d.read_timeout)
    except UpstreamMaybeReceivedError as exc:
        # Sent, and the connection broke before any answer: the upstream may be running
        # it (and billing it). Not retried: a POST is not sent twice (RFC 9112, 9.3.1).
        raise UpstreamConnectionLost(
            f"The connection to the upstream broke after the request was sent ({exc}); "
            "it is not sent again, as the upstream may have received it.",
            retryable=False, retry_after=1, code="upstream_connection_lost",
        ) from exc
    except TimeoutError:
        raise UpstreamUnavailable(
            f"The upstream did not answer within the deployment's timeouts "
            f"({d.name or d.model}: connect {d.connect_timeout:g} s, read "
            f"{d.read_timeout:g} s).", retryable=True, retry_after=1, code="upstream_timeout",
        ) from None
    except OSError as exc:
        raise transport_error(f"{type(exc).__name__}: {exc}") from exc
    if 200 <= response.status < 300:
        return response
    raise refusal(response, await error_body(response))


async def error_body(response: Response) -> bytes:
    """The first ``MAX_ERROR_BODY`` bytes of a response's body, for its error message.

    The response is released when read to its end (the connection may be reused)
    and closed when longer or broken; what was read until a failure is returned.
    """
    raw = b""
    try:
        async for piece in response.iter_any():
            raw += piece
            if len(raw) >= MAX_ERROR_BODY:
                raw = raw[:MAX_ERROR_BODY]
                break
    except (TimeoutError, OSError):
        pass  # the status alone must do
    finally:
        response.release()  # closes the connection unless the body was read to its end
    return raw


def body_text(raw: bytes, response: Response, limit: int = 2000) -> str:
    """An error body as text for a message, or the status's phrase when it is empty."""
    text = raw.decode("utf-8", "replace").strip()[:limit]
    return text or response.reason or f"HTTP {response.status}"


async def probe(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str],
                timeout: float) -> bool:
    """Whether ``GET url`` answers below 500 within ``timeout`` seconds (redirects are
    not followed: they answer too)."""
    try:
        async with session.get(url, headers=dict(headers), allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status < 500
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
