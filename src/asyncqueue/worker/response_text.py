"""What of a callback's response is stored, as text: pure functions, no I/O.

* The body is decoded by the charset its Content-Type declares, else as UTF-8 (JSON's encoding,
  and what servers that declare nothing send today). Only the WHATWG Encoding Standard's
  charsets are used (charsets.py); any other (`bogus`, `base64`, `idna`, `punycode`, `utf-7`,
  which can cost seconds of CPU on a small body) falls back to UTF-8. Bytes that do not decode
  stay visible as U+FFFD.
* Headers are kept up to domain.MAX_RESPONSE_HEADERS_TOTAL bytes and
  domain.MAX_RESPONSE_HEADER_COUNT entries; the rest are left out and the result says so.
* PostgreSQL's text and jsonb cannot hold U+0000 nor a lone surrogate: each becomes U+FFFD.
"""

from __future__ import annotations

import re

from asyncqueue import domain
from asyncqueue.worker.charsets import codec_for

# (A str holds a surrogate only as a lone one: decoders join pairs into one character.)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """The text with NUL and lone surrogates replaced by U+FFFD: PostgreSQL's text and jsonb
    cannot hold them."""
    return _UNSTORABLE.sub("\ufffd", text) if _UNSTORABLE.search(text) else text


def declared_charset(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type, if any."""
    if not content_type or "charset" not in content_type.lower():
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'").strip() or None
    return None


def decode_body(raw: bytes, content_type: str | None) -> str:
    """The body as text, by its declared charset, else UTF-8; undecodable bytes as U+FFFD."""
    codec = codec_for(declared_charset(content_type))
    if codec:
        try:
            return storable(raw.decode(codec, errors="replace"))
        except (LookupError, UnicodeError, ValueError):  # (not expected of these codecs)
            pass
    return storable(raw.decode("utf-8", errors="replace"))


def header_text(value: str) -> str:
    """A header value as text: http.client reads header bytes as Latin-1, but servers that send
    non-ASCII send UTF-8, so bytes that form valid UTF-8 are read as such."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def stored_headers(
    items,
    *,
    max_total: int = domain.MAX_RESPONSE_HEADERS_TOTAL,
    max_count: int = domain.MAX_RESPONSE_HEADER_COUNT,
) -> tuple[dict, bool]:
    """(headers to store, names lowercased, whether any were left out). `items` are (name,
    value) pairs, repeated names already joined. A header that would take the total over
    `max_total` bytes (name plus value, UTF-8) is left out and the ones after it still count,
    so one huge header does not hide the small ones behind it."""
    kept, total, truncated = {}, 0, False
    for name, value in items:
        value = storable(header_text(value))
        size = len(name) + len(value.encode())
        if len(kept) >= max_count or total + size > max_total:
            truncated = True
            continue
        kept[name.lower()] = value
        total += size
    return kept, truncated
