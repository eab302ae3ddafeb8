"""The console's browser session: a login token in an HttpOnly cookie, and its CSRF token.

The console never holds an API key. ``POST /v1/auth/session`` puts a login token in the
``kathan_session`` cookie (``HttpOnly``: scripts cannot read it; ``SameSite=Strict``: other
sites' pages do not send it; ``Secure`` when the request came over https), and answers
with the session's CSRF token. Every state-changing request that authenticates with the
cookie must echo that token in ``X-CSRF-Token`` (``check``): a page on another origin can
make a browser send the cookie (a form post to a same-site origin, say) but cannot read
the token. The token is an HMAC of the session's own secret, so it needs no storage and
dies with the session. An ``Origin`` header that is not this server's own is refused too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from starlette.requests import HTTPConnection

from kathan.errors import PermissionDeniedError

COOKIE = "kathan_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_token: str) -> str:
    mac = hmac.new(session_token.encode("utf-8"), b"kathan console csrf", hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def check(request: HTTPConnection, method: str, session_token: str) -> None:
    """Refuse (403 ``csrf_failed``) a state-changing request made with the cookie that
    lacks the session's CSRF token or comes from another origin."""
    if method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request):
        raise PermissionDeniedError(
            f"Cross-site request refused: it comes from {origin}, not from this server's "
            "own console.", code="csrf_failed")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None or not hmac.compare_digest(sent.encode("utf-8", "replace"),
                                               csrf_token(session_token).encode("ascii")):
        raise PermissionDeniedError(
            "Missing or wrong X-CSRF-Token header: a request authenticated by the console's "
            "session cookie must carry the token from GET /v1/auth/session.",
            code="csrf_failed")


def own_origin(request: HTTPConnection) -> str:
    """This server's origin as the browser sees it (the scheme and Host it used)."""
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"


def secure(request: HTTPConnection) -> bool:
    """Whether the cookie should be ``Secure``: the browser reached us over https
    (directly, or through a proxy that uvicorn's ``--proxy-headers`` trusts)."""
    return request.url.scheme == "https"
