"""Settings read once from the environment (12-factor), with the defaults the README documents."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from asyncqueue import limits


class ConfigError(ValueError):
    """A setting in the environment is missing or malformed."""


def _number(env: dict, name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _flag(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    database_url: str
    port: int = 8000
    web_concurrency: int = 2
    worker_concurrency: int = 16
    db_pool_size: int = 4
    lease_grace: float = 10.0
    shutdown_grace: float = 25.0
    allow_private_networks: bool = False
    max_response_body: int = 65536
    max_delay_days: float = 365.0
    log_level: str = "INFO"
    fairness_reserve: int = 4  # fair: slots per worker only teams below their cap may use
    create_rates: dict = field(default_factory=lambda: dict(limits.PLAN_CREATE_RATE))  # fair

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get("DATABASE_URL", "")
        if not url:
            raise ConfigError("DATABASE_URL is not set (bin/dev sets it for you)")
        return cls(
            database_url=url,
            port=int(_number(env, "PORT", 8000, minimum=1)),
            web_concurrency=int(_number(env, "WEB_CONCURRENCY", 2, minimum=1)),
            worker_concurrency=int(_number(env, "ASYNCQUEUE_WORKER_CONCURRENCY", 16, minimum=1)),
            db_pool_size=int(_number(env, "ASYNCQUEUE_DB_POOL_SIZE", 4, minimum=1)),
            lease_grace=_number(env, "ASYNCQUEUE_LEASE_GRACE", 10.0),
            shutdown_grace=_number(env, "ASYNCQUEUE_SHUTDOWN_GRACE", 25.0),
            allow_private_networks=_flag(env, "ASYNCQUEUE_ALLOW_PRIVATE_NETWORKS", False),
            max_response_body=int(_number(env, "ASYNCQUEUE_MAX_RESPONSE_BODY", 65536, minimum=0)),
            max_delay_days=_number(env, "ASYNCQUEUE_MAX_DELAY_DAYS", 365.0, minimum=0),
            log_level=env.get("ASYNCQUEUE_LOG_LEVEL", "INFO").upper(),
            fairness_reserve=_fairness_reserve(env),  # fair
            create_rates=_create_rates(env),  # fair
        )


def _fairness_reserve(env: dict) -> int:
    """ASYNCQUEUE_FAIRNESS_RESERVE: whole slots, 0 turns fairness off; default a quarter of the
    concurrency (at least 1)."""
    concurrency = int(_number(env, "ASYNCQUEUE_WORKER_CONCURRENCY", 16, minimum=1))
    default = max(1, concurrency // 4)
    return int(_number(env, "ASYNCQUEUE_FAIRNESS_RESERVE", default, minimum=0))


def _create_rates(env: dict) -> dict:
    """ASYNCQUEUE_CREATE_RATE: `plan=per-second` pairs (`free=20,pro=500`; a plan left out keeps
    its default, 0 means unlimited), or `off` for no create limits."""
    name = "ASYNCQUEUE_CREATE_RATE"
    raw = (env.get(name) or "").strip()
    rates = dict(limits.PLAN_CREATE_RATE)
    if raw.lower() == "off":
        return dict.fromkeys(rates, None)
    for part in filter(None, (p.strip() for p in raw.split(","))):
        plan, _, value = part.partition("=")
        plan = plan.strip()
        if plan not in limits.PLANS:
            raise ConfigError(
                f"{name}: unknown plan {plan!r} in {raw!r}; plans are {', '.join(limits.PLANS)}"
            )
        rate = _number({name: value.strip() or "(nothing)"}, name, 0, minimum=0)
        rates[plan] = rate or None
    return rates
