"""What of a response is stored: the body as text by its charset, the headers capped."""

import pytest

from asyncqueue.worker.response_text import (
    declared_charset,
    decode_body,
    storable,
    stored_headers,
)

CAFE = "café ✓"


@pytest.mark.parametrize(
    "content_type, charset",
    [
        (None, None),
        ("application/json", None),
        ("text/plain; charset=utf-8", "utf-8"),
        ('text/plain; Charset="ISO-8859-1"', "ISO-8859-1"),
        ("text/plain;format=flowed; charset=koi8-r ", "koi8-r"),
        ("text/plain; charset=", None),
    ],
)
def test_declared_charset(content_type, charset):
    assert declared_charset(content_type) == charset


@pytest.mark.parametrize(
    "raw, content_type, text",
    [
        (CAFE.encode(), None, CAFE),
        (CAFE.encode(), "text/plain", CAFE),  # not ISO-8859-1 (requests' default for text/*)
        (CAFE.encode(), "text/plain; charset=utf-8", CAFE),
        ("café".encode("latin-1"), "text/plain; charset=latin-1", "café"),
        ("привет".encode("koi8-r"), "text/plain; charset=koi8-r", "привет"),
        (CAFE.encode(), "text/plain; charset=bogus", CAFE),
        (CAFE.encode(), "text/plain; charset=idna", CAFE),
        (CAFE.encode(), "text/plain; charset=base64", CAFE),
        (CAFE.encode(), "text/plain; charset=rot13", CAFE),
        (b"ok \xff\xfe end", "text/plain", "ok \ufffd\ufffd end"),
        (CAFE.encode()[:-1], "text/plain", "café \ufffd"),  # cut inside a character
        (b"a\x00b", None, "a\ufffdb"),
        # Not text encodings of the web: read as UTF-8.
        (b"abc-xyz", "text/plain; charset=punycode", "abc-xyz"),
        (b"+2D8-", "text/plain; charset=utf-7", "+2D8-"),
        (b"\\ud800", "text/plain; charset=unicode_escape", "\\ud800"),
        (b"\\ud800", "text/plain; charset=raw_unicode_escape", "\\ud800"),
        (CAFE.encode(), "text/plain; charset=zlib", CAFE),
        (CAFE.encode(), "text/plain; charset=utf_8_sig", CAFE),
        ("é".encode("cp1252"), "text/plain; charset=US-ASCII", "é"),
        ("日本".encode("shift_jis"), "text/plain; charset=Shift_JIS", "日本"),
        ("日本".encode("euc-jp"), "text/plain; charset=EUC-JP", "日本"),
        ("中文".encode("gbk"), "text/plain; charset=gb2312", "中文"),
        ("한국".encode("euc-kr"), "text/plain; charset=euc-kr", "한국"),
        ("ok".encode("utf-16-le"), "text/plain; charset=utf-16le", "ok"),
        (b"\x00\xd8", "text/plain; charset=utf-16le", "\ufffd"),  # a lone surrogate
    ],
)
def test_decode_body(raw, content_type, text):
    assert decode_body(raw, content_type) == text


def test_headers_within_the_caps_are_kept_whole():
    headers, truncated = stored_headers([("Content-Type", "a/b"), ("X-A", "1")])
    assert headers == {"content-type": "a/b", "x-a": "1"} and not truncated


def test_headers_over_the_total_are_left_out_and_marked():
    items = [
        ("X-Big", "b" * 20000),
        ("X-Small", "s"),
        ("X-Mid", "m" * 9000),
        ("X-Mid2", "m" * 9000),
    ]
    headers, truncated = stored_headers(items, max_total=16384, max_count=64)
    assert truncated
    assert list(headers) == ["x-small", "x-mid"]


def test_headers_over_the_count_are_left_out_and_marked():
    headers, truncated = stored_headers([(f"X-{i}", "v") for i in range(70)], max_count=64)
    assert len(headers) == 64 and truncated


def test_header_values_in_utf8_are_read_as_utf8_and_nul_is_replaced():
    latin1_view = CAFE.encode().decode("latin-1")  # how http.client hands them over
    headers, _ = stored_headers([("X-Name", latin1_view), ("X-Odd", "p\x00q"), ("X-L", "caf\xe9")])
    assert headers == {"x-name": CAFE, "x-odd": "p\ufffdq", "x-l": "caf\xe9"}


@pytest.mark.parametrize(
    "text, stored",
    [
        ("plain", "plain"),
        ("a\x00b", "a\ufffdb"),
        ("a\ud800b", "a\ufffdb"),  # what utf-7's +2D8- decodes to: jsonb refuses it
        ("\udfff\x00", "\ufffd\ufffd"),
        ("😀", "😀"),
    ],
)
def test_storable_replaces_what_postgresql_cannot_hold(text, stored):
    assert storable(text) == stored


def test_a_header_with_a_lone_surrogate_is_stored():
    headers, _ = stored_headers([("X-S", "a\ud800")])
    assert headers == {"x-s": "a\ufffd"}
