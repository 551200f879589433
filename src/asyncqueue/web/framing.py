"""Where an HTTP/1.1 request ends, found incrementally as its bytes arrive: pure, no I/O.

The web worker reads each request whole in its event loop before a thread takes it (see
`web.worker`), so it must know when a request is complete: the head ends at the first blank
line; a body then has the declared Content-Length or runs to the chunked terminator. The parsing
proper (and every refusal of a malformed request) stays gunicorn's: anything this scanner cannot
follow is handed over as it is, to be refused there.

Everything buffered before the app sees a request is bounded here, so one request costs at most
MAX_REQUEST_BYTES: the head, then a body up to `max_body` decoded bytes plus its chunked framing
(size lines, their extensions, line ends and trailers), each part with its own limit below.
"""

from __future__ import annotations

import enum

from asyncqueue import domain

MORE = "more"  # keep reading
COMPLETE = "complete"  # a whole request is buffered (perhaps more after it)
HAND_OVER = "hand over"  # malformed (gunicorn answers it), or over the body limit (413)
HEAD_TOO_LARGE = "head too large"  # no blank line within MAX_HEAD
UNREADABLE = "unreadable"  # a chunk-size line that is not one
EXTENSIONS_TOO_LARGE = "extensions too large"  # past MAX_CHUNK_LINE or MAX_CHUNK_EXTENSIONS
TRAILERS_TOO_LARGE = "trailers too large"  # past MAX_TRAILER_BYTES or MAX_TRAILER_FIELDS
FRAMING_TOO_LARGE = "framing too large"  # past MAX_CHUNK_OVERHEAD
REFUSALS = (HEAD_TOO_LARGE, UNREADABLE, EXTENSIONS_TOO_LARGE, TRAILERS_TOO_LARGE, FRAMING_TOO_LARGE)

KIB = 1024
HEX_DIGITS = b"0123456789abcdefABCDEF"  # (gunicorn's chunk-size characters: no sign, _ or 0x)
# Request line and headers (gunicorn's own per-line limits apply inside). Fixed, not derived
# from --limit-request-line: gunicorn caps that at 8,190 bytes (0, "unlimited", included), so
# the longest request line it accepts always fits, with room for the headers.
MAX_HEAD = 64 * KIB
# A chunk-size line with its extensions (Go's net/http allows 4 KiB), and all extensions of one
# request together (Node's limit): nothing reads extensions, they only cost buffer.
MAX_CHUNK_LINE = 4 * KIB
MAX_CHUNK_EXTENSIONS = 16 * KIB
MAX_TRAILER_BYTES = 8 * KIB  # the trailer section, line ends included
MAX_TRAILER_FIELDS = 32
# Everything in a chunked body that is not data: size lines, extensions, line ends, trailers.
# Chunks of 32 bytes or more carry a 1 MiB body within it; 1-byte chunks would take 5 MiB.
MAX_CHUNK_OVERHEAD = 256 * KIB
# One request buffered at most (a recv's worth past a body over the limit may be in it).
MAX_REQUEST_BYTES = MAX_HEAD + domain.MAX_REQUEST_BODY + 1 + MAX_CHUNK_OVERHEAD


_EMPTY_BYTEARRAY = bytearray().__sizeof__()


class Body(enum.Enum):
    NONE = 0
    LENGTH = 1
    CHUNKED = 2


class RequestFraming:
    """Feed it bytes; it says when a request is whole. A body over `max_body` bytes is handed
    over (`over_limit`) as soon as that is known, from its declared length or a chunk's size:
    the worker answers 413 without waiting for it."""

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = domain.MAX_REQUEST_BODY):
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
        self._overhead = 0  # chunked: bytes of whole lines and line ends that are not data
        self._extensions = 0  # chunked: bytes of chunk extensions so far
        self._trailer_bytes = 0
        self._trailer_fields = 0

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
    def allocated(self) -> int:
        """Bytes allocated for the buffer: a bytearray allocates up to an eighth more than it
        holds, so that appending is cheap."""
        return self.data.__sizeof__() - _EMPTY_BYTEARRAY

    def allocation_after(self, more: int) -> int:
        """At most what is allocated for the buffer once `more` bytes are fed (CPython grows a
        bytearray to its new length plus an eighth, plus a few bytes)."""
        size = len(self.data) + more
        return max(self.allocated, size + (size >> 3) + 6)

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
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            return HAND_OVER
        # Leading zeros do not count: gunicorn reads any number of them.
        digits = lengths[0].lstrip(b"0") if lengths else b""
        self.length = int(digits) if 0 < len(digits) < 19 else 0
        if len(digits) >= 19 or self.length > self.max_body:
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
            # A line still arriving counts against the limits too, so none grows unbounded.
            length = (len(data) if line_end < 0 else line_end) - self._chunk_at
            verdict = self._line_over_limit(length)
            if verdict is not None:
                return verdict
            if line_end < 0:
                return MORE
            line = bytes(data[self._chunk_at : line_end])
            self._chunk_at = line_end + 2
            self._overhead += length + 2
            if self._in_trailer:
                if not line:
                    return COMPLETE
                self._trailer_bytes += length + 2
                self._trailer_fields += 1
                if self._trailer_fields > MAX_TRAILER_FIELDS:
                    return TRAILERS_TOO_LARGE
                continue
            size_text, semicolon, extensions = line.partition(b";")
            self._extensions += len(extensions)
            if self._extensions > MAX_CHUNK_EXTENSIONS:
                return EXTENSIONS_TOO_LARGE
            size = chunk_size(size_text, bool(semicolon))
            if size is None:
                return UNREADABLE  # (gunicorn would raise it inside the app's body read)
            if size == 0:
                self._in_trailer = True
                continue
            if self._chunk_data + size > self.max_body:
                # Over the limit, known from the size line: the worker answers 413 at once
                # (nothing past what is buffered would be read, by the app or anyone).
                self.over_limit = True
                return HAND_OVER
            self._chunk_data += size
            self._overhead += 2  # the line end after the chunk's data
            self._chunk_end = line_end + 2 + size + 2

    def _line_over_limit(self, length: int) -> str | None:
        """The refusal for a chunked-body line of `length` bytes (without its line end), if any
        limit is past once it is counted."""
        if self._in_trailer:
            # (the blank line that ends the trailers is not one of them)
            if length and self._trailer_bytes + length + 2 > MAX_TRAILER_BYTES:
                return TRAILERS_TOO_LARGE
        elif length > MAX_CHUNK_LINE:
            return EXTENSIONS_TOO_LARGE
        if self._overhead + length > MAX_CHUNK_OVERHEAD:
            return FRAMING_TOO_LARGE
        return None


def chunk_size(text: bytes, has_extensions: bool) -> int | None:
    """A chunk-size line's size as gunicorn reads it (hex digits only, any number of leading
    zeros, blanks only before extensions), or None where gunicorn refuses it. Past 16 digits it
    is only said to be larger than any body limit."""
    if has_extensions:
        text = text.rstrip(b" \t")
    if not text or text.translate(None, HEX_DIGITS):
        return None
    digits = text.lstrip(b"0")
    return int(digits[:17] or b"0", 16)
