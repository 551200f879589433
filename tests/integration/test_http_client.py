"""The worker's HTTP client against a real server: what one task's call leaves behind for the
next task's call on the same thread."""

from asyncqueue.worker import http_client
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt


def test_cookies_set_by_one_callback_are_not_sent_with_the_next(receiver):
    session = http_client.make_session(allow_private=True)
    first = perform_attempt(
        session, CallSpec("POST", receiver.url("/cookie/a"), {}, "{}"), Deadline.after(5), 1024
    )
    assert first.status_code == 200 and "session=secret" in first.headers["set-cookie"]
    perform_attempt(
        session, CallSpec("POST", receiver.url("/ok/cookie-b"), {}, "{}"), Deadline.after(5), 1024
    )
    (second,) = receiver.calls("/ok/cookie-b")
    assert "Cookie" not in second.headers
    assert len(session.cookies) == 0


def test_kept_alive_connection_is_reused_between_attempts(receiver):
    session = http_client.make_session(allow_private=True)
    for i in range(5):
        spec = CallSpec("POST", receiver.url(f"/ok/reuse-{i}"), {}, "{}")
        assert perform_attempt(session, spec, Deadline.after(5), 1024).status_code == 200
    ports = {receiver.calls(f"/ok/reuse-{i}")[0].client_port for i in range(5)}
    assert len(ports) == 1


def test_task_headers_override_the_defaults_whatever_their_case(receiver):
    session = http_client.make_session(allow_private=True)
    spec = CallSpec("POST", receiver.url("/ok/ua-default"), {"X-Custom": "1"}, "{}")
    perform_attempt(session, spec, Deadline.after(5), 1024)
    spec = CallSpec("POST", receiver.url("/ok/ua-own"), {"user-agent": "mine/2"}, "{}")
    perform_attempt(session, spec, Deadline.after(5), 1024)
    (default,) = receiver.calls("/ok/ua-default")
    (own,) = receiver.calls("/ok/ua-own")
    assert default.headers["User-Agent"] == "AsyncQueue/1.0"
    assert default.headers["X-Custom"] == "1"
    # Sent once, with the task's value (header names are compared without case).
    assert [v for k, v in own.headers.items() if k.lower() == "user-agent"] == ["mine/2"]
