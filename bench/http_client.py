"""Kathan's HTTP/1.1 client (HTTPPool) against httpx and aiohttp, as an upstream client.

A raw asyncio mock upstream runs in a child process (so that its CPU is not
counted) on plain HTTP and on HTTPS, with a throwaway self-signed certificate
made by ``openssl req`` in a temporary folder. It answers every POST at once:
an OpenAI-style chat completion as JSON, or, when the body asks to stream, an
SSE stream of 20 chunks (chunked transfer encoding).

For each kind of upstream (http JSON, http SSE, https JSON, https SSE) each
client sends requests one at a time on a kept-alive connection, in batches
that take turns between the clients (so that a slow spell of a shared host
lands on all of them), after a warm-up that opens the connections. Measured:
latency p50/p99 (send to the last body byte read) and the client process's
CPU time per request (``time.process_time`` over each batch). The event loop
is uvloop's, the one Kathan serves with.

    python -m bench.http_client [--requests 1000] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import aiohttp
import httpx
import uvloop

from bench.common import pct
from kathan.backends.http1 import HTTPPool

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "Say something."}]}
JSON_BODY = json.dumps(CHAT).encode()
SSE_BODY = json.dumps({**CHAT, "stream": True}).encode()


# --- the mock upstream (child process) ---------------------------------------------------


def _answers() -> tuple[bytes, bytes]:
    words = ["This", " is", " a", " fixed", " reply", " from", " the", " mock"] * 3
    completion = json.dumps({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": "mock",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "".join(words)}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36}}).encode()
    plain = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(completion)) + completion
    events = [{"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
               "model": "mock", "choices": [{"index": 0, "delta": {"content": w},
                                              "finish_reason": None}]} for w in words[:19]]
    chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    chunks.append(b"data: [DONE]\n\n")
    stream = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" \
             b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
                 b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return plain, stream


class _Upstream(asyncio.Protocol):
    PLAIN, STREAM = _answers()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(self.STREAM if b'"stream": true' in body else self.PLAIN)


async def _serve(cert: str, key: str) -> None:
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    plain = await loop.create_server(_Upstream, "127.0.0.1", 0)
    secure = await loop.create_server(_Upstream, "127.0.0.1", 0, ssl=tls)
    ports = [s.sockets[0].getsockname()[1] for s in (plain, secure)]
    print(*ports, flush=True)
    await asyncio.Event().wait()  # until the parent ends this process


def _certificate(folder: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        sys.exit("the openssl command is needed to make the throwaway certificate")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


# --- the clients -------------------------------------------------------------------------

Send = Callable[[bool], Awaitable[None]]  # one request, its body read to the end


async def _clients(
    base: str, tls: ssl.SSLContext
) -> tuple[dict[str, Send], Callable[[], Awaitable[None]]]:
    url = f"{base}/v1/chat/completions"
    pool = HTTPPool(ssl_context=tls)
    endpoint = pool.endpoint(url, HEADERS)
    hx = httpx.AsyncClient(verify=tls, headers=HEADERS, timeout=30)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls), headers=HEADERS)

    async def kathan(stream: bool) -> None:
        response = await endpoint.post(SSE_BODY if stream else JSON_BODY,
                                       connect_timeout=5, read_timeout=30)
        async for _ in response.iter_any():
            pass

    async def with_httpx(stream: bool) -> None:
        async with hx.stream("POST", url, content=SSE_BODY if stream else JSON_BODY) as r:
            async for _ in r.aiter_bytes():
                pass

    async def with_aiohttp(stream: bool) -> None:
        async with session.post(url, data=SSE_BODY if stream else JSON_BODY) as r:
            async for _ in r.content.iter_any():
                pass

    async def close() -> None:
        await pool.close()
        await hx.aclose()
        await session.close()

    return {"HTTPPool": kathan, "httpx": with_httpx, "aiohttp": with_aiohttp}, close


async def _measure(send: Send, stream: bool, n: int) -> tuple[list[float], float]:
    latencies = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        await send(stream)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies, time.process_time() - cpu


async def _bench(ports: list[int], cert: str, requests: int, batch: int) -> None:
    tls = ssl.create_default_context(cafile=cert)
    print(f"{requests} sequential requests per client and kind, in batches of {batch} "
          "taking turns; latency in ms, CPU in us per request (the client process)")
    print(f"{'kind':<11} {'client':<9} {'p50':>6} {'p99':>6} {'CPU us':>7}  "
          f"{'p50 x':>6} {'p99 x':>6} {'CPU x':>6}")
    for scheme, port, host in (("http", ports[0], "127.0.0.1"), ("https", ports[1], "localhost")):
        clients, close = await _clients(f"{scheme}://{host}:{port}", tls)
        try:
            for stream in (False, True):
                for send in clients.values():
                    await _measure(send, stream, 50)  # connections open, caches warm
                lat: dict[str, list[float]] = {name: [] for name in clients}
                cpu = dict.fromkeys(clients, 0.0)
                for turn in range(requests // batch):
                    names = list(clients)
                    names = names[turn % 3:] + names[:turn % 3]  # who goes first rotates
                    for name in names:
                        times, spent = await _measure(clients[name], stream, batch)
                        lat[name] += times
                        cpu[name] += spent
                kind = f"{scheme} {'SSE' if stream else 'JSON'}"
                ref = lat["HTTPPool"], cpu["HTTPPool"]
                for name in clients:
                    per = cpu[name] / len(lat[name]) * 1e6
                    print(f"{kind:<11} {name:<9} {pct(lat[name], 50):6.3f} "
                          f"{pct(lat[name], 99):6.3f} {per:7.0f}  "
                          f"{pct(lat[name], 50) / pct(ref[0], 50):6.2f} "
                          f"{pct(lat[name], 99) / pct(ref[0], 99):6.2f} "
                          f"{cpu[name] / ref[1]:6.2f}")
                    kind = ""
        finally:
            await close()
    print("(x: the ratio to HTTPPool; above 1 is slower or costlier than HTTPPool)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve(*args.serve))
        return
    with tempfile.TemporaryDirectory() as folder:
        cert, key = _certificate(Path(folder))
        server = subprocess.Popen([sys.executable, "-m", "bench.http_client", "--serve", cert,
                                   key], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            ports = [int(p) for p in server.stdout.readline().split()]
            if len(ports) != 2:
                sys.exit("the mock upstream did not start")
            uvloop.run(_bench(ports, cert, args.requests, args.batch))
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
