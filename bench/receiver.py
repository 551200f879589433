"""A fast callback receiver for benchmarks (asyncio, HTTP/1.1 keep-alive, 127.0.0.1 only).

Every request's `X-AsyncQueue-Task-Id` goes into a ledger with its arrival time, so the harness
can count deliveries, duplicates and latency. `/slow` answers after 50 ms, anything else at once.
GET /__ledger returns the ledger; POST /__reset empties it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

LEDGER: dict[str, list[float]] = {}
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


def _reply(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
    ) + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time()
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            task_id, length = None, 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "x-asyncqueue-task-id":
                    task_id = value.strip()
            if length:
                await reader.readexactly(length)
            if path == "/__ledger":
                writer.write(_reply(json.dumps(LEDGER).encode()))
            elif path == "/__reset":
                LEDGER.clear()
                writer.write(_reply(b"{}"))
            else:
                if task_id:
                    LEDGER.setdefault(task_id, []).append(arrived)
                if path.startswith("/slow"):
                    await asyncio.sleep(0.05)
                writer.write(OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"receiver on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
