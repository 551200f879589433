"""A callback receiver on 127.0.0.1 that records every request it gets."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: bytes
    at: float  # time.time() when the request line arrived
    client_port: int = 0  # the caller's source port: one per connection it opened


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1. Paths choose the behaviour:

    /ok                      200 with a JSON body
    /status/<code>           that status
    /flaky/<n>/<name>        503 for the first n calls to <name>, then 200
    /sleep/<seconds>         wait, then 200
    /redirect/<code>         redirect to /ok with that code
    /big/<bytes>             a body of that many bytes
    /goto/<code>?<url>       redirect to <url> (percent-encoded) with that code
    /cookie/<name>           200 with a Set-Cookie header
    /nul/<name>              200 with NUL bytes in the body and in a header
    /endless                 stream a chunked body that never ends (until the client leaves)
    """

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests.append(
                        Received(
                            self.command,
                            self.path,
                            dict(self.headers),
                            body,
                            arrived,
                            self.client_address[1],
                        )
                    )
                self._respond()

            def _send(self, code: int, body: bytes = b'{"ok": true}', headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _stream_forever(self):
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"y" * 65536
                end = time.monotonic() + 30  # bounded, like every load here
                try:
                    while time.monotonic() < end:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    pass  # the client stopped reading, as it should
                self.close_connection = True

            def _respond(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                kind = parts[0]
                if kind == "status":
                    self._send(int(parts[1]), b'{"status": "%s"}' % parts[1].encode())
                elif kind == "flaky":
                    with receiver.lock:
                        receiver.counts[parts[2]] += 1
                        n = receiver.counts[parts[2]]
                    self._send(503 if n <= int(parts[1]) else 200)
                elif kind == "sleep":
                    time.sleep(float(parts[1]))  # a slow receiver: the delay is what is asked for
                    self._send(200)
                elif kind == "redirect":
                    self._send(int(parts[1]), b"", {"Location": "/ok"})
                elif kind == "big":
                    self._send(200, b"x" * int(parts[1]))
                elif kind == "goto":
                    target = unquote(self.path.split("?", 1)[1])
                    self._send(int(parts[1]), b"", {"Location": target})
                elif kind == "nul":
                    self._send(200, b'{"a": "x\x00y"}\x00', {"X-Odd": "p\x00q"})
                elif kind == "cookie":
                    self._send(200, headers={"Set-Cookie": "session=secret; Path=/"})
                elif kind == "endless":
                    self._stream_forever()
                else:
                    self._send(200)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            # A real receiver's backlog, not socketserver's 5: bursts of new connections from
            # several workers' threads at once must queue, not wait out SYN retransmits.
            request_queue_size = 128

        self.server = Server((self.host, self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def calls(self, path_prefix: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def json_bodies(self, path_prefix: str) -> list:
        return [json.loads(r.body) for r in self.calls(path_prefix)]
