"""What a header on a task's callback may be: one rule, which the API checks when a task is
created and the worker checks again before it sends (its own default headers included).

A name is an HTTP token. A value holds only tab, printable ASCII and printable Latin-1, and
does not start with a space, a tab or a no-break space (U+00A0): what HTTP/1.1 carries as it
is, and what the worker's client (which encodes values as Latin-1, and refuses a value that
starts with whitespace as Unicode counts it) can send. The patterns are written once, in a form
both Python and the OpenAPI document (ECMA-262 regular expressions) read the same way.
"""

from __future__ import annotations

import re

TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE_CHAR = r"\t\x20-\x7e\xa0-\xff"
_VALUE_FIRST = r"\x21-\x7e\xa1-\xff"  # a value char, but not a space, tab or no-break space
VALUE_PATTERN = rf"^(?:[{_VALUE_FIRST}][{_VALUE_CHAR}]*)?$"

_TOKEN = re.compile(TOKEN)
_NOT_VALUE_CHAR = re.compile(rf"[^{_VALUE_CHAR}]")


def is_token(name: str) -> bool:
    """Whether `name` may name a header."""
    return _TOKEN.fullmatch(name) is not None


def value_problem(value: str) -> str | None:
    """Why `value` cannot be a header's value (the reason, never the value itself: values are
    often secrets), or None."""
    bad = _NOT_VALUE_CHAR.search(value)
    if bad:
        char = bad.group()
        if char in "\r\n":
            return "must not contain line breaks"
        if char > "\xff":
            return "must contain only Latin-1 characters (up to U+00FF)"
        return "must not contain control characters (tab is allowed)"
    if value[:1] in (" ", "\t"):
        return "must not start with a space or tab"
    if value[:1] == "\xa0":
        return "must not start with a no-break space (U+00A0)"
    return None
