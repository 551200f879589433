"""Which task headers the worker can send, and that the reason never quotes a value (a secret in a
header value must not reach the task's error or the log)."""

import pytest

from asyncqueue.worker.execute import header_problem

SECRET = "sk_live_0123456789"


@pytest.mark.parametrize(
    "name, value, sendable",
    [
        ("Authorization", f"Bearer {SECRET}", True),
        ("X-Empty", "", True),
        ("Authorization", f" Bearer {SECRET}", False),
        ("Authorization", f"\tBearer {SECRET}", False),
        ("Authorization", f"Bearer {SECRET}\r\nX-Injected: 1", False),
        ("Authorization", f"Bearer {SECRET}\n", False),
        ("Authorization", f"Bearer {SECRET}☃", False),
        ("X:Colon", SECRET, False),
        (" X-Lead", SECRET, False),
        ("X-É", SECRET, False),
    ],
)
def test_header_problem_names_the_header_never_its_value(name, value, sendable):
    problem = header_problem(name, value)
    assert (problem is None) == sendable, problem
    if problem:
        assert SECRET not in problem and "Bearer" not in problem and "☃" not in problem


def test_every_value_the_rule_accepts_the_http_client_sends():
    # The worker's client refuses some values the bytes alone would allow (one starting with
    # U+00A0, which it counts as whitespace): the rule must refuse them at creation instead.
    from requests.exceptions import InvalidHeader
    from requests.utils import check_header_validity

    from asyncqueue.http_headers import value_problem

    for code in range(256):
        for value in (chr(code) + "x", "x" + chr(code) + "x", "x" + chr(code)):
            if value_problem(value) is not None:
                continue
            try:
                check_header_validity(("X-A", value))
            except InvalidHeader:
                raise AssertionError(
                    f"accepted but unsendable: U+{code:04X} in {value!r}"
                ) from None
