"""All configuration, from `TIDINGS_*` environment variables (or a `.env` file). Nothing else
reads the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .domain.validation import SECRETS_MANAGER_ARN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDINGS_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./tidings.db"
    database_pool_size: int = Field(10, ge=1, le=200)
    # PostgreSQL only: keep Tidings' tables in this schema (created on migrate).
    database_schema: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    admin_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    # AWS serverless mode: the Secrets Manager secrets holding those two keys, read once per
    # cold start when the key itself is unset (so no key sits in the function's configuration).
    # The admin key is "tda_" followed by its secret's string, as the SAM template generates it.
    secret_key_arn: str | None = Field(None, pattern=SECRETS_MANAGER_ARN.pattern)
    admin_key_arn: str | None = Field(None, pattern=SECRETS_MANAGER_ARN.pattern)

    max_body_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024)
    auth_cache_seconds: float = Field(2.0, ge=0, le=60)
    rate_limit_per_second: float = Field(2000.0, ge=0)  # per app (or operator); 0 disables
    rate_limit_burst: int = Field(4000, ge=1)
    user_token_ttl_seconds: int = Field(3600, ge=60, le=30 * 24 * 3600)

    worker_batch_size: int = Field(500, ge=1, le=10_000)
    worker_lease_seconds: float = Field(60.0, gt=0)
    worker_poll_interval: float = Field(0.5, gt=0, le=60)
    # Recipients a broadcast writes per transaction while it expands.
    broadcast_batch_size: int = Field(1000, ge=10, le=10_000)
    # Batches one worker process has in flight at once (claimed, sending or being recorded).
    worker_lanes: int = Field(2, ge=1, le=32)
    provider_concurrency: dict[str, int] = Field(default_factory=dict)
    provider_default_concurrency: int = Field(32, ge=1, le=10_000)
    # Requests one app's provider credential keeps in flight (HTTP/2 streams or pooled sockets).
    provider_max_requests: int = Field(128, ge=1, le=10_000)
    provider_timeout_seconds: float = Field(15.0, gt=0, le=300)
    # Webhook URLs (outgoing events and the webhook channel) may name private addresses.
    allow_private_webhooks: bool = False
    # This service's public base URL (https://notify.example.com), for provider callbacks.
    public_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    retry_max_attempts: int = Field(8, ge=1, le=100)
    retry_base_seconds: float = Field(2.0, gt=0)
    retry_cap_seconds: float = Field(3600.0, gt=0)

    # Cluster mode: API nodes share stream events through Redis pub/sub (redis://host:6379/0).
    redis_url: str | None = Field(None, pattern=r"^rediss?://")
    redis_channel_prefix: str = Field("tidings", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Real-time streams (WebSocket and server-sent events).
    stream_heartbeat_seconds: float = Field(20.0, ge=1, le=300)
    stream_buffer_events: int = Field(256, ge=8, le=100_000)  # per connection, then 4408
    stream_max_frame_bytes: int = Field(4096, ge=256, le=1024 * 1024)  # from clients, then 1009
    stream_retention_seconds: int = Field(7 * 24 * 3600, ge=60)
    stream_recheck_seconds: float = Field(30.0, ge=1, le=3600)  # revoked keys, other nodes
    # AWS serverless mode: the SQS queue the deliveries go through, the API Gateway
    # Management API endpoint of the WebSocket API (https://{id}.execute-api.{region}
    # .amazonaws.com/{stage}), and the regions and default sender of the SNS and SES providers.
    queue_url: str | None = Field(None, pattern=r"^https?://\S+$")
    websocket_endpoint: str | None = Field(None, pattern=r"^https?://\S+$")
    email_from: str | None = None
    aws_ses_region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    aws_sns_region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")

    # Browser origins allowed to call the API (CORS), e.g. ["https://app.example.com"].
    cors_origins: list[str] = Field(default_factory=list)

    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "sqlite://", "sqlite+pysqlite://",
                                 "postgresql://", "postgresql+asyncpg://", "postgres://",
                                 "dynamodb://")):
            raise ValueError("use sqlite+aiosqlite:///path.db, postgresql+asyncpg://user@host/db "
                             "or dynamodb://table?region=eu-west-1")
        if value.startswith("postgres://"):
            value = "postgresql+asyncpg://" + value.removeprefix("postgres://")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def store_backend(self) -> str:
        """The registry name of the store that `database_url` names."""
        scheme = self.database_url.split("://", 1)[0].split("+", 1)[0]
        return "postgresql" if scheme == "postgres" else scheme
