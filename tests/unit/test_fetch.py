"""The image fetcher refuses what an SSRF needs and reads only bounded images."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kathan.backends import fetch
from kathan.backends.fetch import fetch_image, is_public_address, parse_data_url
from kathan.errors import InvalidRequestError
from tests.upstreams.gemini_fake import Script, serve, tiny_png

PARAM = "messages[0].content[1].image_url.url"
PNG = tiny_png()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def images() -> AsyncIterator[tuple[str, list[str]]]:
    """A local image server with the awkward answers; yields its URL and the Host headers seen."""
    hosts: list[str] = []

    async def image(request: web.Request) -> web.Response:
        hosts.append(request.headers.get("Host", ""))
        return web.Response(body=PNG, content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"0" * 5000, content_type="image/png")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(50):
                await response.write(b"1" * 1000)
        except ConnectionResetError:
            pass  # the fetcher stopped reading, as it should
        return response

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html></html>", content_type="text/html")

    async def octet(request: web.Request) -> web.Response:
        body = PNG if request.match_info["kind"] == "png" else b"MZ\x90\x00 not an image"
        return web.Response(body=body, content_type="application/octet-stream")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/chain/{n - 1}" if n > 0 else "/image.png")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(body=PNG, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no")

    app = web.Application()
    app.router.add_get("/image.png", image)
    app.router.add_get("/big.png", big)
    app.router.add_get("/stream.png", stream)
    app.router.add_get("/page", page)
    app.router.add_get("/octet/{kind}", octet)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/slow.png", slow)
    app.router.add_get("/missing.png", missing)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", hosts
    finally:
        await runner.cleanup()


async def refused(url: str, session: aiohttp.ClientSession, **kwargs: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        await fetch_image(url, session, param=PARAM, **kwargs)
    assert info.value.param == PARAM
    assert info.value.status_code == 400
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://10.1.2.3/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/x.png",  # carrier-grade NAT
        "http://0.0.0.0/x.png",
        "http://224.0.0.1/x.png",
        "http://[::1]/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://[::ffff:169.254.169.254]/x.png",
        "http://[2002:7f00:1::1]/x.png",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::a00:1]/x.png",  # NAT64 of 10.0.0.1
        "http://[fe80::1]/x.png",
        "http://[fd00::1]/x.png",
        "http://localhost/x.png",  # a name that resolves to loopback
    ],
)
async def test_refuses_non_public_hosts(url: str, session: aiohttp.ClientSession) -> None:
    error = await refused(url, session)
    assert "non-public address" in error.message


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x.png",
        "gopher://example.com/x",
        "javascript:alert(1)",
        "/relative/x.png",
        "http://user:secret@example.com/x.png",
        "http:///x.png",
    ],
)
async def test_refuses_other_schemes_credentials_and_hostless(
    url: str, session: aiohttp.ClientSession
) -> None:
    error = await refused(url, session)
    assert "non-public" not in error.message


async def test_accepts_the_fakes_png_with_allow_private(session: aiohttp.ClientSession) -> None:
    async with serve(Script()) as base_url:
        mime, data = await fetch_image(
            f"{base_url}/image.png", session, param=PARAM, allow_private=True
        )
    assert (mime, data) == ("image/png", PNG)


async def test_private_hosts_need_allow_private(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    await refused(f"{images[0]}/image.png", session)


async def test_oversized_body_refused_by_content_length(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    error = await refused(f"{images[0]}/big.png", session, max_bytes=1000, allow_private=True)
    assert error.code == "image_too_large"


async def test_oversized_body_refused_while_streaming(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    error = await refused(f"{images[0]}/stream.png", session, max_bytes=2500, allow_private=True)
    assert error.code == "image_too_large"


async def test_non_image_content_type_refused(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    error = await refused(f"{images[0]}/page", session, allow_private=True)
    assert "text/html" in error.message


async def test_octet_stream_is_sniffed(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    mime, data = await fetch_image(
        f"{images[0]}/octet/png", session, param=PARAM, allow_private=True
    )
    assert (mime, data) == ("image/png", PNG)
    await refused(f"{images[0]}/octet/junk", session, allow_private=True)


async def test_error_status_and_timeout_refused(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    error = await refused(f"{images[0]}/missing.png", session, allow_private=True)
    assert "404" in error.message
    error = await refused(f"{images[0]}/slow.png", session, allow_private=True, timeout=0.2)
    assert "0.2 seconds" in error.message


async def test_redirects_are_followed_up_to_three(
    images: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    url = images[0]
    assert await fetch_image(f"{url}/chain/2", session, param=PARAM, allow_private=True) == (
        "image/png", PNG,
    )
    error = await refused(f"{url}/chain/3", session, allow_private=True)
    assert "more than 3" in error.message


async def test_each_redirect_hop_is_vetted(
    images: tuple[str, list[str]], session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The local server stands in for a public host; where it redirects must pass the check too.
    original = fetch.is_public_address
    monkeypatch.setattr(
        fetch, "is_public_address",
        lambda address: str(address) == "127.0.0.1" or original(address),
    )
    url = images[0]
    assert (await fetch_image(f"{url}/image.png", session, param=PARAM))[0] == "image/png"
    for target in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:80/x.png",
                   "file:///etc/passwd"):
        await refused(f"{url}/redirect?to={target}", session)


async def test_the_connection_goes_to_the_vetted_address(
    images: tuple[str, list[str]], session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name is resolved once; a second lookup would fail here."""
    url, hosts = images
    port = int(url.rsplit(":", 1)[1])
    lookups: list[str] = []

    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        if len(lookups) > 1:
            raise socket.gaierror("rebound")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    mime, _ = await fetch_image(
        f"http://rebind.test:{port}/image.png", session, param=PARAM, allow_private=True
    )
    assert mime == "image/png"
    assert lookups == ["rebind.test"]
    assert hosts == [f"rebind.test:{port}"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for img.test: (certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=img.test",
         "-addext", "subjectAltName=DNS:img.test"],
        check=True, capture_output=True,
    )
    return cert, key


async def test_https_checks_the_certificate_against_the_urls_host(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection goes to the vetted IP, but TLS still verifies the name in the URL."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/image.png", image)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    port = runner.addresses[0][1]

    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
            url = f"https://img.test:{port}/image.png"
            assert await fetch_image(url, session, param=PARAM, allow_private=True) == (
                "image/png", PNG,
            )
            error = await refused(f"https://other.test:{port}/image.png", session,
                                  allow_private=True)
            assert "certificate" in error.message.lower()
    finally:
        await runner.cleanup()


async def test_any_bad_address_refuses_the_host(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    error = await refused("http://mixed.test/x.png", session)
    assert "10.0.0.7" in error.message


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("::", False),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("240.0.0.1", False),  # reserved
        ("255.255.255.255", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_parse_data_url() -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert parse_data_url(url, param=PARAM) == ("image/png", PNG)
    assert parse_data_url(url.replace("data:", "DATA:"), param=PARAM)[1] == PNG


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,not*base64!",
        "data:image/png,rawbytes",  # not base64
        "data:text/plain;base64,aGVsbG8=",
        "data:;base64,aGVsbG8=",
        "data:image/png;base64,",
        "data:image/png;base64",  # no comma
        "http://example.com/x.png",
    ],
)
def test_parse_data_url_refuses(url: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_data_url(url, param=PARAM)
    assert info.value.param == PARAM


def test_parse_data_url_size_limit() -> None:
    url = "data:image/png;base64," + base64.b64encode(b"x" * 1001).decode()
    with pytest.raises(InvalidRequestError) as info:
        parse_data_url(url, param=PARAM, max_bytes=1000)
    assert info.value.code == "image_too_large"
    assert parse_data_url(url, param=PARAM, max_bytes=1001)[1] == b"x" * 1001
    huge = "data:image/png;base64," + "A" * 8000
    with pytest.raises(InvalidRequestError):
        parse_data_url(huge, param=PARAM, max_bytes=1000)
