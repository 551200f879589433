"""Settings read once from the environment (12-factor), with the defaults the README documents.

Every variable any process reads is declared here, once, as a field of `Settings`:

    name: type = setting("ENV_NAME", parser, default)

`Settings.from_env()` parses them all and refuses the first malformed one with a single line
naming it, so the web (gunicorn's master, before any worker forks), the worker and the CLI stop
at start instead of failing later. An `ASYNCQUEUE_*` variable nobody declared (a typo) is warned
about. Parsers are pure: they take the raw string and return the value or raise ValueError with
what was expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields

import psycopg.conninfo

from asyncqueue import domain
from asyncqueue.outbound.destinations import LOOPBACK_ONLY

PREFIX = "ASYNCQUEUE_"
# Read by the test suite only (tests/), never by the service; not typos.
TEST_ONLY_VARIABLES = frozenset(
    {"ASYNCQUEUE_SOAK", "ASYNCQUEUE_FUZZ_EXAMPLES", "ASYNCQUEUE_FUZZ_SECONDS"}
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed (the message is one line)."""


# -- parsers: raw string -> value, or ValueError saying what was expected -----------------------


def whole(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        text = raw.strip()
        # ASCII digits only: int() would also read other scripts' digits ("٣" is 3).
        value = int(text) if text.isascii() and text.lstrip("-").isdigit() else None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"a whole number of at least {minimum}{upper}")
        return value

    return parse


def number(minimum: float = 0, maximum: float = math.inf) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        text = raw.strip()
        try:  # ASCII only: float() would also read other scripts' digits
            value = float(text) if text.isascii() else None
        except ValueError:
            value = None
        # NaN and infinity are no use as seconds, days or bytes (and NaN compares False).
        if value is None or not math.isfinite(value) or not minimum <= value <= maximum:
            bound = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
            raise ValueError(f"a number of at least {minimum:g}{bound}")
        return value

    return parse


def ip_address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise ValueError(
            "an IP address (0.0.0.0 for every interface, 127.0.0.1 for this machine)"
        ) from None


def flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def private_networks(raw: str) -> bool | str:
    """true/false (every private range, or none), or `loopback` (127.0.0.0/8 and ::1 only)."""
    if raw.strip().lower() == LOOPBACK_ONLY:
        return LOOPBACK_ONLY
    try:
        return flag(raw)
    except ValueError:
        raise ValueError("true, false or loopback") from None


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper()
        if value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value

    return parse


def text(raw: str) -> str:
    return raw


def database_url(raw: str) -> str:
    try:
        psycopg.conninfo.conninfo_to_dict(raw)
    except psycopg.Error:
        raise ValueError("a PostgreSQL URL (postgresql://user:password@host:5432/name)") from None
    return raw


def readable_file(raw: str) -> str:
    if not (os.path.isfile(raw) and os.access(raw, os.R_OK)):
        raise ValueError("the path of a readable file")
    return raw


def zero_or_at_least(minimum: float, maximum: float = math.inf) -> Callable[[str], float]:
    """A number that is 0 (off: unlimited, keep all) or from `minimum` to `maximum`."""
    in_range = number(minimum, maximum)

    def parse(raw: str) -> float:
        try:
            value = number(0)(raw)
            return value if value == 0 else in_range(raw)
        except ValueError:
            bound = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
            raise ValueError(f"0 or a number of at least {minimum:g}{bound}") from None

    return parse


def create_rates(raw: str) -> dict:
    """`plan=per-second` pairs (`free=20,pro=500`; a plan left out keeps its default, 0 means
    unlimited), or `off` for no create limits."""
    rates = dict(domain.PLAN_CREATE_RATE)
    if raw.strip().lower() == "off":
        return dict.fromkeys(rates, None)
    for part in filter(None, (p.strip() for p in raw.split(","))):
        plan, _, value = part.partition("=")
        plan = plan.strip()
        if plan not in domain.PLANS:
            raise ValueError(f"plan=rate pairs for the plans {', '.join(domain.PLANS)}, or off")
        # Whole creates are counted per second: a rate below 1 would refuse every create.
        try:
            rate = zero_or_at_least(1)(value.strip() or "nothing")
        except ValueError:
            raise ValueError(
                "plan=rate pairs whose rates are 0 (unlimited) or at least 1 per second, or off"
            ) from None
        rates[plan] = rate or None
    return rates


def setting(
    env: str,
    parse: Callable[[str], object],
    default=MISSING,
    *,
    factory: Callable[[], object] | None = None,
    required: str = "",
    secret: bool = False,
):
    """A Settings field read from the variable `env`. An empty value counts as unset. `factory`
    makes a mutable default (a dict, say). Without either the variable is required, and
    `required` says how to get it. A `secret` value is never repeated in an error message."""
    metadata = {"env": env, "parse": parse, "required": required, "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    # fmt: off
    database_url: str = setting("DATABASE_URL", database_url, required="bin/dev sets it for you; in production the platform's PostgreSQL add-on does", secret=True)
    port: int = setting("PORT", whole(1, 65535), 8000)
    web_concurrency: int = setting("WEB_CONCURRENCY", whole(1, 256), 2)
    web_threads: int = setting("ASYNCQUEUE_WEB_THREADS", whole(1, 1024), 4)
    db_pool_size: int = setting("ASYNCQUEUE_DB_POOL_SIZE", whole(1, 1000), 4)
    worker_concurrency: int = setting("ASYNCQUEUE_WORKER_CONCURRENCY", whole(1, 10000), 16)
    # At least half a second: the grace covers cutting a call at its limit and writing its
    # outcome; with less, the lease could run out first and the task run twice.
    lease_grace: float = setting("ASYNCQUEUE_LEASE_GRACE", number(0.5), 10.0)
    shutdown_grace: float = setting("ASYNCQUEUE_SHUTDOWN_GRACE", number(0), 25.0)
    allow_private_networks: bool | str = setting(
        "ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", private_networks, False
    )
    max_response_body: int = setting("ASYNCQUEUE_MAX_RESPONSE_BODY", whole(0), 65536)
    max_delay_days: float = setting("ASYNCQUEUE_MAX_DELAY_DAYS", number(0, domain.MAX_DELAY_DAYS), 365.0)
    log_level: str = setting("ASYNCQUEUE_LOG_LEVEL", one_of(*LOG_LEVELS), "INFO")
    retention_days: float = setting("ASYNCQUEUE_RETENTION_DAYS", zero_or_at_least(1, domain.MAX_RETENTION_DAYS), 30.0)  # 0 keeps all
    worker_metrics_port: int | None = setting("ASYNCQUEUE_WORKER_METRICS_PORT", whole(1, 65535), None)
    worker_metrics_host: str = setting("ASYNCQUEUE_WORKER_METRICS_HOST", ip_address, "0.0.0.0")  # fmt: skip
    metrics_token: str | None = setting("ASYNCQUEUE_METRICS_TOKEN", text, None, secret=True)
    ca_bundle: str | None = setting("ASYNCQUEUE_CA_BUNDLE", readable_file, None)  # a PEM file
    header_timeout: float = setting("ASYNCQUEUE_HEADER_TIMEOUT", number(0.001), 10.0)  # web: request line and headers
    body_timeout: float = setting("ASYNCQUEUE_BODY_TIMEOUT", number(0.001), 30.0)  # web: body after headers
    web_connections: int = setting("ASYNCQUEUE_WEB_CONNECTIONS", whole(1, 100000), 1000)  # web: per process; when full the longest-waiting is shed
    fairness_reserve: int | None = setting("ASYNCQUEUE_FAIRNESS_RESERVE", whole(0), None)  # worker: None is a quarter of the concurrency
    create_rates: dict = setting("ASYNCQUEUE_CREATE_RATE", create_rates, factory=lambda: dict(domain.PLAN_CREATE_RATE))  # API: per plan, per second
    # fmt: on

    def __post_init__(self):
        # The fairness reserve's default follows the concurrency: a quarter of it, at least 1.
        if self.fairness_reserve is None:
            object.__setattr__(self, "fairness_reserve", max(1, self.worker_concurrency // 4))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `env` (the process environment if None, which also warns on stderr
        about unknown ASYNCQUEUE_* variables). Raises ConfigError naming the first bad one."""
        if env is None:
            env = os.environ
            warn_unknown_variables(env)
        values = {}
        for f in fields(cls):
            name, parse = f.metadata["env"], f.metadata["parse"]
            raw = env.get(name, "")
            if raw.strip() == "":
                if f.default is MISSING and f.default_factory is MISSING:
                    raise ConfigError(f"{name} is not set ({f.metadata['required']})")
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                got = "" if f.metadata["secret"] else f", got {raw!r}"
                raise ConfigError(f"{name} must be {exc}{got}") from None
        return cls(**values)


def known_variables() -> frozenset[str]:
    return frozenset(f.metadata["env"] for f in fields(Settings)) | TEST_ONLY_VARIABLES


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One message per ASYNCQUEUE_* variable that no setting reads, with a likely intended one."""
    known = known_variables()
    messages = []
    for name in sorted(n for n in env if n.startswith(PREFIX) and n not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        messages.append(f"{name} is not a setting AsyncQueue reads; it is ignored{hint}")
    return messages


_warned: set[str] = set()


def warn_unknown_variables(env: Mapping[str, str]) -> None:
    for message in unknown_variables(env):
        if message not in _warned:  # once per process, however often settings are read
            _warned.add(message)
            print(f"asyncqueue: warning: {message}", file=sys.stderr, flush=True)


def settings_or_exit() -> Settings:
    """Settings from the environment, or one line on stderr and exit status 2 (for entry points
    that are not the CLI, such as gunicorn's config)."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        print(f"asyncqueue: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
