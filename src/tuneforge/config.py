"""Settings read from ``TUNEFORGE_*`` environment variables and ``.env``."""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PRICES_PER_MILLION_TRAINING_TOKENS: dict[str, float] = {
    "gpt-4o-2024-08-06": 25.0,
    "gpt-4o-mini-2024-07-18": 3.0,
    "gpt-4.1-2025-04-14": 25.0,
    "gpt-4.1-mini-2025-04-14": 5.0,
    "gpt-4.1-nano-2025-04-14": 1.5,
    "gpt-3.5-turbo-0125": 8.0,
}


PRIVATE_UMASK = 0o077  # files 0600, directories 0700


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNEFORGE_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to a SQLite file in data_dir."
    )
    jwt_secret: str | None = Field(
        default=None, description="HS256 key; generated once into data_dir when unset."
    )
    jwt_expiry_seconds: int = 60 * 60 * 24
    auth_cache_seconds: float = Field(
        default=5.0,
        description="How long a process trusts a credential it checked; a revocation, "
        "removed membership or deactivated user takes effect within this time. 0 disables.",
    )
    upload_limit_bytes: int = 100 * 1024 * 1024
    ingest_processes: int = Field(
        default=0,
        ge=0,
        description="Processes that check a large JSON Lines upload; 0: one per usable core, "
        "1: none, the request's own thread checks it.",
    )
    # Every JSON request body (chat, conversations, imports); uploads have their own limit.
    json_body_limit_bytes: int = 4 * 1024 * 1024
    # Failed sign-ins allowed before each further one waits (doubling, up to the maximum).
    login_free_failures_per_account: int = Field(default=5, ge=1)
    login_free_failures_per_address: int = Field(default=20, ge=1)
    login_max_wait_seconds: int = Field(default=900, ge=1)
    # Generations one organization may run at once in a process; more are 429s.
    inference_concurrency_per_organization: int = Field(default=2, ge=1)
    polling_interval_seconds: float = 60.0
    cors_origins: list[str] = []
    embedded_worker: bool = True
    worker_lease_seconds: float = 30.0
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    inference_cache_bytes: int = 4 * 1024**3
    # Serving batches (inference/batching.py): requests for one base model decode together.
    inference_max_batch_size: int = Field(default=16, ge=1)
    inference_queue_limit: int = Field(
        default=64, ge=0, description="Requests waiting per base model beyond a full batch; 429s."
    )
    inference_batch_window_ms: float = Field(default=10.0, ge=0, le=1000)
    inference_batch_token_limit: int = Field(
        default=32768, ge=1, description="Rows times padded length a batch may grow to."
    )
    inference_prefix_cache_bytes: int = Field(
        default=64 * 1024**2,
        ge=0,
        description="Prompt keys and values kept per base model, so that requests sharing a "
        "prefix (template, system prompt, tools, earlier turns) prefill only the rest; 0: off.",
    )
    inference_adapter_cache_bytes: int = Field(
        default=1024**3, ge=0, description="LoRA adapters kept attached to each base model."
    )
    openai_timeout_seconds: float = 30.0
    # Webhook receivers on private, loopback or link-local addresses are refused unless set
    # (a URL a user types must not reach the operator's internal network).
    webhook_allow_private_destinations: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    training_prices_per_million_tokens: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES_PER_MILLION_TRAINING_TOKENS)
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tuneforge.db').resolve()}"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def model_store_dir(self) -> Path:
        return self.data_dir / "models"

    def ensure_data_dir(self) -> None:
        """Create the data dir, private to this user, and make every file and directory the
        process creates from now on private too (the database, uploads, job directories,
        adapters): they hold users' data and the signing key."""
        os.umask(PRIVATE_UMASK)
        for directory in (self.data_dir, self.uploads_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def signing_key(self) -> str:
        """The configured JWT secret, or one generated once and kept in the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_file = self.data_dir / "jwt_secret"
        if not key_file.exists():
            # Created 0600 from the start: never readable by others, not even for a moment.
            with contextlib.suppress(FileExistsError):
                descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        self.jwt_secret = key_file.read_text().strip()
        return self.jwt_secret


@lru_cache
def get_settings() -> Settings:
    return Settings()
