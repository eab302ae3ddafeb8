"""Images named by URL: fetched safely, or decoded from a ``data:`` URL.

A client's ``image_url`` is a URL Kathan itself would fetch, from inside the
operator's network. ``fetch_image`` therefore refuses what a server-side
request forgery needs:

- schemes other than http and https, and URLs with credentials in them;
- hosts that resolve to any private, loopback, link-local, multicast,
  reserved, unspecified or otherwise non-global address, including IPv4
  addresses hidden in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
  ``2002::/16``, NAT64 ``64:ff9b::/96``, Teredo, IPv4-compatible ``::a.b.c.d``);
- DNS rebinding: the host is resolved once, every address is vetted, and the
  connection goes to a vetted address (the URL's host is replaced by the IP
  literal; ``Host`` and, for https, the TLS server name and certificate check
  keep the original name), so no second lookup can switch the address;
- redirects to unvetted hosts: redirects are not followed by aiohttp but by
  this module, each hop vetted like the first, at most three;
- unbounded bodies: ``Content-Length`` is checked first, then the bytes are
  counted as they arrive (after decompression), and the whole fetch has one
  deadline;
- anything that is not an image: the type must be ``image/*``, or, when the
  server says nothing more than ``application/octet-stream``, the bytes must
  start like a PNG, JPEG, GIF or WebP file.

Every refusal is an ``InvalidRequestError`` naming the caller's ``param``:
the URL is the client's, and so is its fault.

Both ``await fetch_image(url, session, param=...)`` and ``parse_data_url(url,
param=...)`` return the image's ``(mime type, bytes)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket

import aiohttp
from yarl import URL

from kathan.errors import InvalidRequestError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is a globally routable unicast address, embedded IPv4 included.

    >>> is_public_address(ipaddress.ip_address("::ffff:127.0.0.1"))
    False
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False  # a tunnel endpoint pair, never a web server worth reaching
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in _NAT64 or address in _IPV4_COMPATIBLE):
            # The last 32 bits are the IPv4 address (:: and ::1 become 0.0.0.0 and 0.0.0.1).
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def sniff_image_type(data: bytes) -> str | None:
    """The image type that ``data``'s first bytes announce, if a known one."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_data_url(url: str, *, param: str, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[str, bytes]:
    """The (mime type, bytes) of a ``data:image/...;base64,...`` URL.

    >>> parse_data_url("data:image/gif;base64,R0lGODlhAQABAAAAACw=", param="url")[0]
    'image/gif'
    """
    if url[:5].lower() != "data:":
        raise InvalidRequestError("The image is not a data: URL.", param=param)
    header, comma, payload = url[5:].partition(",")
    mime, *options = header.split(";")
    mime = mime.strip().lower()
    if not comma or "base64" not in (o.strip().lower() for o in options):
        raise InvalidRequestError(
            "A data: URL image must be base64-encoded: data:image/<type>;base64,<data>.",
            param=param,
        )
    if not mime.startswith("image/") or len(mime) == len("image/"):
        raise InvalidRequestError(
            f"A data: URL image must have an image/* media type, not '{mime or 'none'}'.",
            param=param,
        )
    if len(payload) > (max_bytes + 2) // 3 * 4:  # refuse before decoding a huge payload
        raise _too_large(param, max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(
            "The data: URL's image is not valid base64.", param=param
        ) from exc
    if not data:
        raise InvalidRequestError("The data: URL's image is empty.", param=param)
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    return mime, data


async def fetch_image(
    url: str,
    session: aiohttp.ClientSession,
    *,
    param: str = "image_url.url",
    max_bytes: int = MAX_IMAGE_BYTES,
    timeout: float = 10.0,
    allow_private: bool = False,
) -> tuple[str, bytes]:
    """Fetch the image at an http(s) ``url``: its (mime type, bytes).

    ``allow_private`` lifts the address check; it exists for tests that serve
    images from 127.0.0.1 and must never be set from client input.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(URL(url), session, param, max_bytes, allow_private)
    except TimeoutError:
        raise InvalidRequestError(
            f"The image could not be fetched within {timeout:g} seconds.", param=param
        ) from None
    except ValueError as exc:  # yarl's verdict on a malformed URL
        raise InvalidRequestError(f"The image URL is malformed: {exc}.", param=param) from exc


async def _fetch(
    url: URL, session: aiohttp.ClientSession, param: str, max_bytes: int, allow_private: bool
) -> tuple[str, bytes]:
    for _ in range(MAX_REDIRECTS + 1):
        host = _check_url(url, param)
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await _vetted_addresses(host, port, param, allow_private)
        response = await _connect(url, host, addresses, session, param)
        async with response:
            if response.status in _REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise InvalidRequestError(
                        f"The image URL redirected ({response.status}) without a Location.",
                        param=param,
                    )
                url = url.join(URL(location))
                continue
            if response.status != 200:
                raise InvalidRequestError(
                    f"Fetching the image failed: the server answered {response.status}.",
                    param=param,
                )
            return await _read_image(response, param, max_bytes)
    raise InvalidRequestError(
        f"The image URL redirected more than {MAX_REDIRECTS} times.", param=param
    )


def _check_url(url: URL, param: str) -> str:
    """The URL's host (IDNA-encoded), after the checks that need no network."""
    if url.scheme not in ("http", "https"):
        raise InvalidRequestError(
            f"Image URLs must be http(s) or data: URLs, not '{url.scheme or 'relative'}'.",
            param=param,
        )
    if url.user is not None or url.password is not None:
        raise InvalidRequestError("Image URLs must not carry credentials.", param=param)
    host = url.raw_host
    if not host:
        raise InvalidRequestError("The image URL has no host.", param=param)
    return host


async def _vetted_addresses(host: str, port: int, param: str, allow_private: bool) -> list[str]:
    """The host's addresses, all of them checked: one bad address refuses the host."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequestError(
            f"The image URL's host '{host}' could not be resolved.", param=param
        ) from exc
    addresses: list[str] = []
    for *_, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 scope id is no part of the address
        address = ipaddress.ip_address(text)
        if not allow_private and not is_public_address(address):
            raise InvalidRequestError(
                f"The image URL's host '{host}' resolves to a non-public address "
                f"({address}); Kathan only fetches images from the public internet.",
                param=param,
            )
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise InvalidRequestError(
            f"The image URL's host '{host}' could not be resolved.", param=param
        )
    return addresses


async def _connect(
    url: URL, host: str, addresses: list[str], session: aiohttp.ClientSession, param: str
) -> aiohttp.ClientResponse:
    """The response from the first vetted address that accepts a connection."""
    headers = {"Host": url.host_port_subcomponent or host, "Accept": "image/*"}
    failure: Exception | None = None
    for address in addresses:
        try:
            return await session.get(
                url.with_host(address),
                headers=headers,
                allow_redirects=False,
                server_hostname=host if url.scheme == "https" else None,
            )
        except aiohttp.ClientConnectorError as exc:
            failure = exc  # try the host's next address
        except aiohttp.ClientError as exc:
            raise InvalidRequestError(
                f"Fetching the image failed: {exc}.", param=param
            ) from exc
    raise InvalidRequestError(
        f"Fetching the image failed: {failure}.", param=param
    ) from failure


async def _read_image(
    response: aiohttp.ClientResponse, param: str, max_bytes: int
) -> tuple[str, bytes]:
    declared = response.content_type.lower()  # aiohttp's default is application/octet-stream
    if not declared.startswith("image/") and declared != "application/octet-stream":
        raise InvalidRequestError(
            f"The image URL serves '{declared}', not an image.", param=param
        )
    if response.content_length is not None and response.content_length > max_bytes:
        raise _too_large(param, max_bytes)
    data = bytearray()
    try:
        async for chunk in response.content.iter_chunked(_CHUNK):
            data += chunk
            if len(data) > max_bytes:
                raise _too_large(param, max_bytes)
    except aiohttp.ClientError as exc:
        raise InvalidRequestError(f"Fetching the image failed: {exc}.", param=param) from exc
    if not data:
        raise InvalidRequestError("The image URL served an empty body.", param=param)
    mime = declared if declared.startswith("image/") else sniff_image_type(bytes(data[:16]))
    if mime is None:
        raise InvalidRequestError(
            "The image URL serves application/octet-stream that is not a PNG, JPEG, GIF "
            "or WebP image.",
            param=param,
        )
    return mime, bytes(data)


def _too_large(param: str, max_bytes: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"The image is larger than {max_bytes} bytes.", param=param, code="image_too_large"
    )
