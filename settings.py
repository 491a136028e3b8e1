"""The one place postroom reads its configuration from (environment, prefix POSTROOM_, or .env)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A notification's `time` may run this far ahead of our clock (Nylas's and ours drift apart).
WEBHOOK_CLOCK_SKEW_S = 300


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTROOM_", env_file=".env", extra="ignore")

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postroom"
    redis_url: str = "redis://127.0.0.1:6379/0"
    nylas_api_uri: str = "https://api.us.nylas.com"
    nylas_api_key: SecretStr | None = None
    nylas_webhook_secret: SecretStr | None = None
    credential_keys: SecretStr | None = None
    flower_basic_auth: SecretStr | None = None
    # Hosts and CIDRs that IMAP/SMTP settings may point at although they are not public
    # addresses (services/destination.py); empty refuses every loopback/private/reserved one.
    allowed_private_mail_hosts: str = ""
    # The same for `generic` OAuth apps' authorize/token/userinfo URLs (services/oauth/).
    allowed_private_oauth_hosts: str = ""
    # What links postroom hands out start with (the OAuth redirect_uri): "https://host[:port]";
    # unset, the scheme and host the request came to.
    public_url: str | None = None
    # OAuth2 access tokens are refreshed this long before they expire, plus up to the jitter.
    oauth_refresh_margin_s: float = Field(default=300.0, ge=300.0)
    oauth_refresh_jitter_s: float = 60.0
    # Token endpoint calls (refresh, code exchange, userinfo): the whole request.
    oauth_http_timeout_s: float = 15.0

    environment: str = "development"
    log_level: str = "INFO"
    log_json: bool = True
    webhook_max_body_bytes: int = 2 * 1024 * 1024
    # The longest a webhook waits for PostgreSQL before answering 503 (Nylas retries a 503; it
    # gives up on an answer slower than 10 s, and a pooled connection that a network partition
    # silenced would otherwise hold the request for the driver's whole command timeout).
    webhook_db_deadline_s: float = 3.0
    api_max_body_bytes: int = 16 * 1024 * 1024
    # An IMAP message larger than this is stored as its header only, flagged `too_large`.
    max_message_bytes: int = 50 * 1024 * 1024
    # How long the API waits for the database before answering 503 (Nylas retries 503, not 500).
    db_connect_timeout_s: float = 1.5
    db_statement_timeout_ms: int = 5000
    db_pool_size: int = 20
    # The webhook's own pool of plain driver connections per API process (its one INSERT).
    webhook_db_pool_size: int = 10
    # Group commit: at most this many webhooks' rows in one INSERT (and their task messages in
    # one Redis script call) per API process: the rows that arrive while INSERTs are on their way.
    webhook_batch_max: int = Field(default=64, ge=1, le=1000)
    # ... and at most this many such INSERTs on their way at once per API process: a webhook
    # arriving while fewer are goes at once; only while all are busy do webhooks queue.
    webhook_batch_statements: int = Field(default=4, ge=1, le=64)
    # A publish after commit must not hold the webhook answer: the outbox sweeper covers failures.
    publish_timeout_s: float = 0.5
    nylas_timeout_s: int = 20
    # An event left in received/queued this long is re-published by the sweeper.
    outbox_stale_after_s: int = 30
    outbox_sweep_interval_s: float = 5.0
    # A running task renews its claim every quarter of this; a claim not renewed for this long
    # has no live owner (the worker died) and the outbox sweeper publishes the event again.
    claim_lease_s: int = 60
    result_expires_s: int = 3600
    task_soft_time_limit_s: int = 600
    task_time_limit_s: int = 660
    worker_max_tasks_per_child: int = 1000
    # A process task for a message.created also stores, classifies and rules up to this many
    # minus one of its grant's other waiting ones, in its transaction
    # (services/nylas/batch.py); 1: off.
    created_batch: int = Field(default=64, ge=1, le=1000)
    retry_base_s: float = 5.0
    retry_factor: float = 2.0
    retry_cap_s: float = 600.0
    event_retention_days: int = 30
    flower_port: int = 5555
    # Flower's task history, saved on shutdown and every minute (relative to the repository
    # root; empty: kept in memory only, lost at restart).
    flower_db: str = ".data/flower.db"

    # IMAP push (`make watch`, docs/operations.md "Push"). IDLE is re-issued after this long:
    # servers may drop an IDLE after 30 minutes (RFC 2177), some NATs sooner.
    push_idle_renew_s: float = 1500.0
    # A listener's hold on an account; renewed every third of it. A dead listener's accounts
    # are taken over once this has passed.
    push_lease_s: float = 60.0
    # Accounts one listener holds at most (one IMAP connection each).
    push_capacity: int = 2000
    # At most one push sync queued per account and folder within this window; a change inside
    # it queues one more sync when it ends, so the last message is never left behind.
    push_coalesce_s: float = 2.0
    # News about folders postroom does not know (NOTIFY) becomes at most one "list folders" sync
    # per account per this many seconds, however many names a server invents.
    push_list_folders_s: float = 60.0
    # Reconnecting after an error: capped exponential backoff with full jitter.
    push_backoff_base_s: float = 1.0
    push_backoff_cap_s: float = 300.0
    # A refused login is retried when the credentials change, or after this long.
    push_auth_retry_s: float = 3600.0
    # Connections being opened at once (a listener starting with many accounts ramps up).
    push_connect_concurrency: int = 50
    # Use NOTIFY (RFC 5465) where offered: other folders' new mail is pushed too.
    push_notify: bool = True
    # Sync INBOX on every (re)connect: mail that came while no one was in IDLE is picked up.
    push_sync_on_connect: bool = True

    # Outbound events (docs/webhooks.md). Hosts and CIDRs a tenant's webhook URL may point at
    # although they are not public addresses (then http:// is allowed too); empty refuses all.
    allowed_private_webhook_hosts: str = ""
    # Waits between attempts, in seconds: the i-th is the most the delivery waits after its
    # i-th failed attempt (full jitter); when they run out the delivery has failed.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    # An endpoint whose every attempt has failed for this long is disabled.
    webhook_disable_after_s: float = 432000.0
    # Any 2xx within this is a success; anything else, or nothing, is a failed attempt.
    webhook_timeout_s: float = 15.0
    # Requests in flight per endpoint in one delivery process, and in all.
    webhook_endpoint_in_flight: int = Field(default=16, ge=1, le=1000)
    webhook_process_in_flight: int = Field(default=4000, ge=1)
    # Due deliveries one claim takes, and how often an idle delivery process looks again.
    webhook_claim_batch: int = Field(default=500, ge=1, le=10000)
    webhook_poll_interval_s: float = 0.2
    # A claimed delivery is due again after this if its process never reported (it died).
    webhook_lease_s: float = 60.0

    # Budgets (docs/operations.md "Budgets"). A rate of 0 turns that limit off.
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 100
    sends_per_minute: int = 60
    # Failed authentications (missing, malformed, unknown or revoked keys) per client address,
    # across API processes; past it, 429 before any key is looked up (docs/security.md).
    unknown_key_per_s: float = 1.0
    unknown_key_burst: int = 30
    # Seconds a key found unknown or revoked is remembered per API process (no query meanwhile).
    unknown_key_cache_s: float = 30.0
    max_accounts_per_tenant: int = 100
    # What one tenant may store (docs/security.md "Quotas"): rules per account, templates per
    # tenant, and the bytes of its drafts, scheduled sends and uploads (0 turns that one off).
    max_rules_per_account: int = Field(default=200, ge=1)
    max_templates_per_tenant: int = Field(default=500, ge=1)
    tenant_storage_bytes: int = Field(default=1024**3, ge=0)
    # POST /v1/accounts/verify (and create with verify=true) connects to servers the tenant
    # names: per tenant, and per tenant and target host, a small burst then a few per hour.
    verify_burst: int = Field(default=10, ge=1)
    verify_per_hour: int = Field(default=20, ge=0)
    verify_host_burst: int = Field(default=5, ge=1)
    verify_host_per_hour: int = Field(default=6, ge=0)
    # Hosts and CIDRs an account may send to on port 25 without SMTP credentials (an internal
    # relay); empty: port 25 without AUTH is refused, so postroom is nobody's open relay.
    allowed_relay_hosts: str = ""
    # Bulk work (syncs) runs in parts of at most this long / this many messages; a part that
    # reaches either commits its progress and queues the next part of the same job.
    bulk_part_s: float = 10.0
    bulk_part_messages: int = 5000
    # Concurrent IMAP connections per mail account across every worker (a Redis semaphore).
    # A task that finds them all taken is retried 1-5 s later at once, without waiting in it.
    imap_max_connections: int = 2
    # Nylas calls per second (and burst) per application and per grant, across every worker
    # (services/nylas/budget.py; 0 = no budget). Nylas allows 200/s per grant for email and
    # providers add their own limits; a 429's Retry-After holds every worker off on top.
    nylas_app_rate_per_s: float = 100.0
    nylas_app_burst: int = 100
    nylas_grant_rate_per_s: float = 10.0
    nylas_grant_burst: int = 20
    # A call waits this long for room in-task; longer, and the task is retried at that time.
    nylas_budget_wait_s: float = 5.0
    # /metrics and /health/detailed serve figures at most this old (one refresh per process).
    metrics_cache_s: float = 5.0
    # Tenants named in the per-tenant queue gauges (the deepest ones); the rest are 'other'.
    metrics_top_tenants: int = 10
    # /metrics and /health/detailed need it as a Bearer token; without one they are open only
    # with environment "development" (503 otherwise). Empty means not set.
    ops_token: SecretStr | None = None
    # GET /v1/feed as a live stream (text/event-stream): how often it looks for new events,
    # how long a quiet stream waits before a keep-alive comment, and how many streams one
    # tenant may hold open at once across every API process (Redis).
    feed_poll_s: float = 0.5
    feed_heartbeat_s: float = 15.0
    feed_max_streams: int = 10
    # A signed notification older than this is a replay: Nylas's own retries end after ~20 min.
    webhook_max_age_s: int = 3 * 24 * 3600

    @field_validator("ops_token", mode="before")
    @classmethod
    def _empty_ops_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _dedupe_outlives_the_replay_window(self) -> Settings:
        # The event row is the dedupe key: the cleanup must not delete it while a replay of
        # its notification would still be inside the accepted window.
        if self.event_retention_days * 86400 < self.webhook_max_age_s + WEBHOOK_CLOCK_SKEW_S:
            raise ValueError(
                "POSTROOM_EVENT_RETENTION_DAYS must cover POSTROOM_WEBHOOK_MAX_AGE_S plus "
                f"{WEBHOOK_CLOCK_SKEW_S} s, or a purged notification could be replayed."
            )
        if self.rate_limit_per_s < 0 or self.rate_limit_burst < 1 or self.sends_per_minute < 0:
            raise ValueError(
                "POSTROOM_RATE_LIMIT_PER_S and POSTROOM_SENDS_PER_MINUTE must be >= 0 "
                "and POSTROOM_RATE_LIMIT_BURST >= 1."
            )
        if self.webhook_lease_s < 2 * self.webhook_timeout_s:
            raise ValueError("POSTROOM_WEBHOOK_LEASE_S must be at least twice the timeout.")
        self.webhook_retry_delays()
        return self

    def webhook_retry_delays(self) -> list[float]:
        """POSTROOM_WEBHOOK_RETRY_SCHEDULE as numbers (seconds)."""
        try:
            delays = [float(x) for x in self.webhook_retry_schedule.split(",") if x.strip()]
        except ValueError:
            raise ValueError("POSTROOM_WEBHOOK_RETRY_SCHEDULE: comma-separated seconds.") from None
        if any(d < 0 for d in delays):
            raise ValueError("POSTROOM_WEBHOOK_RETRY_SCHEDULE: no negative waits.")
        return delays

    def credential_key_list(self) -> list[str]:
        if self.credential_keys is None:
            return []
        return [k.strip() for k in self.credential_keys.get_secret_value().split(",") if k.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
