"""Settings read once from the environment (12-factor), with the defaults the README documents."""

from __future__ import annotations

import os
from dataclasses import dataclass


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
    retention_days: float = 30.0
    worker_metrics_port: int | None = None
    metrics_token: str | None = None

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
            retention_days=_number(env, "ASYNCQUEUE_RETENTION_DAYS", 30.0),
            worker_metrics_port=(
                int(_number(env, "ASYNCQUEUE_WORKER_METRICS_PORT", 0, minimum=1)) or None
            ),
            metrics_token=env.get("ASYNCQUEUE_METRICS_TOKEN") or None,
        )
