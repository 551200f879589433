"""A keep-alive HTTP load generator (asyncio, raw sockets): POST the same JSON body on N
connections for a fixed time or count, recording each response's status and latency."""

from __future__ import annotations

import asyncio
import json
import socket
import time


async def _connection(host, port, request, deadline, remaining, results):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline and remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            results.append((status, time.perf_counter() - started))
    finally:
        writer.close()


def post_request(host: str, port: int, path: str, headers: dict, body) -> bytes:
    """The bytes of one HTTP/1.1 POST of `body` as JSON."""
    payload = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def _run(host, port, path, headers, body, connections, seconds, total):
    request = post_request(host, port, path, headers, body)
    results: list[tuple[int, float]] = []
    remaining = [total]
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(
        *[
            _connection(host, port, request, deadline, remaining, results)
            for _ in range(connections)
        ]
    )
    return results, time.perf_counter() - started


def post_load(host, port, path, headers, body, *, connections=16, seconds=10.0, total=10**9):
    """(list of (status, seconds), elapsed seconds)."""
    return asyncio.run(_run(host, port, path, headers, body, connections, seconds, total))


class RawClient:
    """One kept-alive HTTP/1.1 connection on a plain socket, for timing single requests: the
    client's own cost stays out of the figure (as the peers' enqueue calls have none)."""

    def __init__(self, host: str, port: int, headers: dict):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.host, self.port, self.headers = host, port, headers

    def post_json(self, path: str, body: dict) -> tuple[int, dict]:
        self.sock.sendall(post_request(self.host, self.port, path, self.headers, body))
        status = int(self.file.readline()[9:12])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return status, json.loads(self.file.read(length)) if length else {}

    def close(self) -> None:
        self.file.close()
        self.sock.close()
