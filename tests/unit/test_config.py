"""Settings.from_env: every variable validated in one place, refused in one line naming it."""

from __future__ import annotations

import dataclasses

import pytest

from asyncqueue.config import ConfigError, Settings, known_variables, unknown_variables

URL = "postgresql://aq@127.0.0.1:5432/aq"


def test_defaults_are_the_documented_ones():
    s = Settings.from_env({"DATABASE_URL": URL})
    assert (s.port, s.web_concurrency, s.web_threads, s.db_pool_size) == (8000, 2, 4, 4)
    assert (s.worker_concurrency, s.lease_grace, s.shutdown_grace) == (16, 10.0, 25.0)
    assert (s.allow_private_networks, s.max_response_body, s.max_delay_days) == (False, 65536, 365)
    assert (s.log_level, s.retention_days) == ("INFO", 30.0)
    assert (s.worker_metrics_port, s.metrics_token, s.ca_bundle) == (None, None, None)
    assert (s.header_timeout, s.body_timeout, s.web_connections) == (10.0, 30.0, 1000)


@pytest.mark.parametrize(
    "name, raw, value",
    [
        ("ASYNCQUEUE_RETENTION_DAYS", "0", 0.0),  # 0 keeps everything
        ("ASYNCQUEUE_RETENTION_DAYS", "7.5", 7.5),
        ("PORT", "65535", 65535),
        ("WEB_CONCURRENCY", " 3 ", 3),
        ("ASYNCQUEUE_WEB_THREADS", "8", 8),
        ("ASYNCQUEUE_WEB_CONNECTIONS", "50", 50),
        ("ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", "YES", True),
        ("ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", "off", False),
        ("ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", " Loopback ", "loopback"),
        ("ASYNCQUEUE_LOG_LEVEL", "warning", "WARNING"),
        ("ASYNCQUEUE_WORKER_METRICS_PORT", "9100", 9100),
        ("ASYNCQUEUE_METRICS_TOKEN", "s3cret", "s3cret"),
        ("ASYNCQUEUE_LEASE_GRACE", "", 10.0),  # empty is unset
        ("DATABASE_URL", "host=127.0.0.1 dbname=aq", "host=127.0.0.1 dbname=aq"),
    ],
)
def test_valid_values(name, raw, value):
    s = Settings.from_env({"DATABASE_URL": URL, name: raw})
    (field,) = [f for f in dataclasses.fields(Settings) if f.metadata["env"] == name]
    assert getattr(s, field.name) == value


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        (
            "ASYNCQUEUE_RETENTION_DAYS",
            "-1",
            "must be 0 or a number of at least 1 and at most 36500, got '-1'",
        ),
        (
            "ASYNCQUEUE_RETENTION_DAYS",
            "abc",
            "must be 0 or a number of at least 1 and at most 36500, got 'abc'",
        ),
        ("ASYNCQUEUE_RETENTION_DAYS", "nan", "must be 0 or a number of at least 1"),
        # Past what a PostgreSQL interval holds: every prune would fail.
        ("ASYNCQUEUE_RETENTION_DAYS", "1e308", "at most 36500, got '1e308'"),
        ("ASYNCQUEUE_RETENTION_DAYS", "36501", "at most 36500, got '36501'"),
        # A fraction of a day would delete tasks minutes after they finish.
        (
            "ASYNCQUEUE_RETENTION_DAYS",
            "0.01",
            "ASYNCQUEUE_RETENTION_DAYS must be 0 or a number of at least 1",
        ),
        ("ASYNCQUEUE_LEASE_GRACE", "inf", "must be a number of at least 0.5"),
        ("ASYNCQUEUE_LEASE_GRACE", "0", "must be a number of at least 0.5"),
        ("PORT", "0", "must be a whole number of at least 1 and at most 65535"),
        ("PORT", "80a", "must be a whole number"),
        ("WEB_CONCURRENCY", "2.5", "must be a whole number of at least 1"),
        ("WEB_CONCURRENCY", "0", "must be a whole number of at least 1"),
        ("ASYNCQUEUE_WEB_THREADS", "many", "must be a whole number of at least 1"),
        # A huge count would make gunicorn's master fork without end.
        ("WEB_CONCURRENCY", "99999999999999999999999", "at least 1 and at most 256"),
        ("ASYNCQUEUE_WEB_THREADS", "5000", "at most 1024"),
        ("ASYNCQUEUE_DB_POOL_SIZE", "5000", "at most 1000"),
        ("ASYNCQUEUE_WORKER_CONCURRENCY", "100000", "at most 10000"),
        # Other scripts' digits are not read as numbers ("٣" is an Arabic-Indic 3).
        ("PORT", "\u0663", "must be a whole number"),
        ("ASYNCQUEUE_LEASE_GRACE", "\u0663", "must be a number of at least 0.5"),
        ("ASYNCQUEUE_DB_POOL_SIZE", "0", "must be a whole number of at least 1"),
        ("ASYNCQUEUE_WORKER_CONCURRENCY", "-4", "must be a whole number of at least 1"),
        ("ASYNCQUEUE_SHUTDOWN_GRACE", "-0.5", "must be a number of at least 0"),
        ("ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", "maybe", "must be true, false or loopback"),
        ("ASYNCQUEUE_MAX_RESPONSE_BODY", "64k", "must be a whole number of at least 0"),
        ("ASYNCQUEUE_MAX_DELAY_DAYS", "-1", "must be a number of at least 0"),
        # Past a century, a create would overflow the date it checks delayUntil against.
        (
            "ASYNCQUEUE_MAX_DELAY_DAYS",
            "3000000",
            "must be a number of at least 0 and at most 36500",
        ),
        ("ASYNCQUEUE_LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("ASYNCQUEUE_WORKER_METRICS_PORT", "70000", "at most 65535"),
        ("ASYNCQUEUE_HEADER_TIMEOUT", "0", "must be a number of at least 0.001"),
        ("ASYNCQUEUE_BODY_TIMEOUT", "soon", "must be a number of at least 0.001"),
        ("ASYNCQUEUE_WEB_CONNECTIONS", "0", "must be a whole number of at least 1"),
        ("ASYNCQUEUE_WEB_CONNECTIONS", "1000000", "at most 100000"),
        ("ASYNCQUEUE_CA_BUNDLE", "/nonexistent/ca.pem", "must be the path of a readable file"),
        ("DATABASE_URL", "postgresql://aq@host:notaport/x?sslmode=bogus=", "must be a PostgreSQL"),
    ],
)
def test_malformed_values_are_refused_in_one_line_naming_the_variable(name, raw, expected):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DATABASE_URL": URL, name: raw})
    message = str(refused.value)
    assert message.startswith(name + " ")
    assert expected in message
    assert "\n" not in message


def test_missing_database_url_says_how_to_get_one():
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is not set \(bin/dev sets it"):
        Settings.from_env({})


def test_ca_bundle_must_be_a_readable_file(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.from_env({"DATABASE_URL": URL, "ASYNCQUEUE_CA_BUNDLE": str(pem)}).ca_bundle
    with pytest.raises(ConfigError, match="ASYNCQUEUE_CA_BUNDLE"):
        Settings.from_env({"DATABASE_URL": URL, "ASYNCQUEUE_CA_BUNDLE": str(tmp_path)})


def test_every_variable_is_declared_once():
    names = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(names) == len(set(names))
    assert {"PORT", "WEB_CONCURRENCY", "ASYNCQUEUE_WEB_THREADS"} <= known_variables()


@pytest.mark.parametrize(
    "env, messages",
    [
        ({"ASYNCQUEUE_LOG_LEVEL": "INFO", "HOME": "/root", "PORT": "1"}, []),
        ({"ASYNCQUEUE_SOAK": "1", "ASYNCQUEUE_FUZZ_EXAMPLES": "5"}, []),  # the tests' own
        (
            {"ASYNCQUEUE_RETENTON_DAYS": "3"},
            [
                "ASYNCQUEUE_RETENTON_DAYS is not a setting AsyncQueue reads; it is ignored "
                "(did you mean ASYNCQUEUE_RETENTION_DAYS?)"
            ],
        ),
        (
            {"ASYNCQUEUE_COLOUR": "blue"},
            ["ASYNCQUEUE_COLOUR is not a setting AsyncQueue reads; it is ignored"],
        ),
    ],
)
def test_unknown_asyncqueue_variables_are_named(env, messages):
    assert unknown_variables(env) == messages


def test_a_setting_can_have_a_mutable_default():
    from dataclasses import dataclass

    from asyncqueue.config import setting, whole

    @dataclass(frozen=True)
    class Example(Settings):
        rates: dict = setting("ASYNCQUEUE_EXAMPLE", whole(0), factory=lambda: {"free": 1})

    assert Example.from_env({"DATABASE_URL": URL}).rates == {"free": 1}
    assert Example.from_env({"DATABASE_URL": URL, "ASYNCQUEUE_EXAMPLE": "5"}).rates == 5


def test_a_malformed_database_url_is_named_without_repeating_its_password():
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"DATABASE_URL": "postgresql://aq:s3cret@host:notaport/x?a=b=c"})
    assert str(refused.value).startswith("DATABASE_URL must be a PostgreSQL URL")
    assert "s3cret" not in str(refused.value)
