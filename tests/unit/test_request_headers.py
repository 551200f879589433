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
