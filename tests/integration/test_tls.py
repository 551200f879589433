"""HTTPS callbacks against a local TLS server on 127.0.0.1, with a throwaway CA (trustme):
the certificate is checked against the host name the task gave (SNI too), even though the
connection goes to an address the worker resolved and checked itself."""

import socket
import ssl
import time

import pytest
import trustme

from asyncqueue.config import Settings
from asyncqueue.worker import http_client
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt
from tests.support import Receiver
from tests.support.raw_http import FakeResolver, ScriptedServer


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_bundle(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "bundle.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tls_receiver(ca):
    """A Receiver speaking TLS with a certificate for callback.test and 127.0.0.1."""
    receiver = Receiver().start()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("callback.test", "127.0.0.1").configure_cert(context)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    yield receiver
    receiver.stop()


@pytest.fixture
def resolver(monkeypatch):
    fake = FakeResolver(socket.getaddrinfo)
    fake.add("callback.test", "127.0.0.1")
    fake.add("other.test", "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    fake.release()


def call(url, ca_bundle=None, seconds=5.0):
    client = http_client.make_session(allow_private=True, ca_bundle=ca_bundle)
    try:
        return perform_attempt(
            client, CallSpec("GET", url, {}, None), Deadline.after(seconds), 1024
        )
    finally:
        client.close()


def test_a_certificate_for_the_name_is_accepted(tls_receiver, ca_bundle, resolver):
    result = call(f"https://callback.test:{tls_receiver.port}/ok/tls-name", ca_bundle)
    assert result.status_code == 200, result
    (received,) = tls_receiver.calls("/ok/tls-name")
    assert received.headers["Host"] == f"callback.test:{tls_receiver.port}"


def test_a_certificate_for_another_name_is_a_tls_error(tls_receiver, ca_bundle, resolver):
    result = call(f"https://other.test:{tls_receiver.port}/ok/tls-wrong", ca_bundle)
    assert result.status_code is None and result.error == "fetch failed: TLS error", result
    assert tls_receiver.calls("/ok/tls-wrong") == []


def test_an_ip_url_is_checked_against_the_ip_in_the_certificate(tls_receiver, ca_bundle):
    result = call(f"https://127.0.0.1:{tls_receiver.port}/ok/tls-ip", ca_bundle)
    assert result.status_code == 200, result


def test_without_the_bundle_a_private_ca_is_not_trusted(tls_receiver, resolver):
    result = call(f"https://callback.test:{tls_receiver.port}/ok/tls-default")
    assert result.error == "fetch failed: TLS error", result


def test_a_tls_handshake_that_hangs_ends_at_the_deadline():
    # The server reads the ClientHello as the start of a request head and waits for a blank
    # line that never comes: the handshake hangs, and `serve` is never called.
    server = ScriptedServer(lambda *args: None).start()
    try:
        started = time.monotonic()
        result = call(f"https://127.0.0.1:{server.port}/", seconds=1.0)
        took = time.monotonic() - started
    finally:
        server.stop()
    assert result.timed_out, result
    assert took <= 1.5
    assert server.requests == []


def test_the_ca_bundle_is_read_from_the_environment(tmp_path):
    bundle = tmp_path / "private-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"DATABASE_URL": "postgresql://x/y", "ASYNCQUEUE_CA_BUNDLE": str(bundle)}
    assert Settings.from_env(env).ca_bundle == str(bundle)
    env["ASYNCQUEUE_CA_BUNDLE"] = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="ASYNCQUEUE_CA_BUNDLE"):
        Settings.from_env(env)
    assert Settings.from_env({"DATABASE_URL": "postgresql://x/y"}).ca_bundle is None


def test_a_missing_ca_bundle_is_refused_when_the_client_is_made(tmp_path):
    with pytest.raises(ValueError, match="ASYNCQUEUE_CA_BUNDLE"):
        http_client.make_session(allow_private=False, ca_bundle=str(tmp_path / "missing.pem"))
