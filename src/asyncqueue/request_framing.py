"""Where an HTTP/1.1 request ends, found incrementally as its bytes arrive: pure, no I/O.

The web worker reads each request whole in its event loop before a thread takes it (see
`web_worker`), so it must know when a request is complete: the head ends at the first blank
line; a body then has the declared Content-Length or runs to the chunked terminator. The parsing
proper (and every refusal of a malformed request) stays gunicorn's: anything this scanner cannot
follow is handed over as it is, to be refused there.
"""

from __future__ import annotations

import enum

MORE = "more"  # keep reading
COMPLETE = "complete"  # a whole request is buffered (perhaps more after it)
HAND_OVER = "hand over"  # malformed or over a body limit: gunicorn and the app answer it
HEAD_TOO_LARGE = "head too large"  # no blank line within the head limit
UNREADABLE = "unreadable"  # a bad chunk-size line, or one (or a trailer) past the head limit


class Body(enum.Enum):
    NONE = 0
    LENGTH = 1
    CHUNKED = 2


class RequestFraming:
    """Feed it bytes; it says when a request is whole. Bodies over `max_body` bytes are handed
    over as soon as that much has arrived (the app answers 413 from what is buffered)."""

    def __init__(self, max_head: int, max_body: int):
        self.max_head = max_head
        self.max_body = max_body
        self.data = bytearray()
        self.head_end: int | None = None
        self.body = Body.NONE
        self.length = 0
        self.expects_continue = False
        self.over_limit = False  # the body is (or is declared) larger than max_body
        self._chunk_at = 0  # chunked: where the next size line starts
        self._chunk_data = 0  # chunked: decoded bytes so far
        self._in_trailer = False
        self._chunk_end: int | None = None  # chunked: where the current chunk (and CRLF) ends

    def feed(self, data: bytes) -> str:
        self.data += data
        if self.head_end is None:
            end = self.data.find(b"\r\n\r\n", max(0, len(self.data) - len(data) - 3))
            if end < 0:
                return HEAD_TOO_LARGE if len(self.data) > self.max_head else MORE
            self.head_end = end + 4
            verdict = self._read_head(bytes(self.data[: self.head_end]))
            if verdict is not None:
                return verdict
        if self.body is Body.NONE:
            return COMPLETE
        if self.body is Body.LENGTH:
            return COMPLETE if len(self.data) - self.head_end >= self.length else MORE
        return self._scan_chunks()

    @property
    def body_started(self) -> bool:
        return self.head_end is not None and len(self.data) > self.head_end

    def _read_head(self, head: bytes) -> str | None:
        lines = head.split(b"\r\n")
        version = lines[0].rpartition(b" ")[2]
        lengths, codings = [], []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings.append(value.strip().lower())
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                self.expects_continue = version == b"HTTP/1.1"
        if codings:
            if lengths or codings[-1].rpartition(b",")[2].strip() != b"chunked":
                return HAND_OVER  # gunicorn refuses these framings
            self.body = Body.CHUNKED
            self._chunk_at = self.head_end
            return None
        if len(lengths) > 1 or (lengths and not (lengths[0].isdigit() and len(lengths[0]) < 19)):
            return HAND_OVER
        self.length = int(lengths[0]) if lengths else 0
        if self.length > self.max_body:
            self.over_limit = True
            return HAND_OVER  # refused (413) from the declared length; nothing more to wait for
        self.body = Body.LENGTH if self.length else Body.NONE
        return None

    def _scan_chunks(self) -> str:
        data = self.data
        while True:
            if self._chunk_end is not None:  # inside a chunk whose size line was read
                if len(data) < self._chunk_end:
                    return MORE
                self._chunk_at, self._chunk_end = self._chunk_end, None
            line_end = data.find(b"\r\n", self._chunk_at)
            if line_end < 0:
                return self._more_or_over(len(data) - self._chunk_at)
            line = bytes(data[self._chunk_at : line_end])
            if self._in_trailer:
                self._chunk_at = line_end + 2
                if not line:
                    return COMPLETE
                continue
            size_text = line.partition(b";")[0].strip()
            try:
                size = int(size_text, 16) if 0 < len(size_text) <= 16 else -1
            except ValueError:
                size = -1
            if size < 0:
                return UNREADABLE  # (gunicorn would raise it inside the app's body read)
            if size == 0:
                self._in_trailer = True
                self._chunk_at = line_end + 2
                continue
            if self._chunk_data + size > self.max_body:
                # Over the limit: hand over once one byte past it is here, so the app's read of
                # max_body + 1 bytes is served from the buffer and it answers 413.
                self.over_limit = True
                needed = line_end + 2 + (self.max_body - self._chunk_data) + 1
                return HAND_OVER if len(data) >= needed else MORE
            self._chunk_data += size
            self._chunk_end = line_end + 2 + size + 2

    def _more_or_over(self, pending: int) -> str:
        # A size line or trailer that never ends: the head limit bounds it too.
        return UNREADABLE if pending > self.max_head else MORE
