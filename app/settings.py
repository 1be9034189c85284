"""Every tunable limit of the service, read once from the environment (prefix ``CNNVIZ_``).

Example: ``CNNVIZ_MAX_SESSIONS=8 cnnviz``. Request bounds (batch size, learning rate, steps per
request) are baked into the request schemas when ``app.schemas`` is first imported, so they show up
in the OpenAPI document; changing them needs a restart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent


def default_static_dir() -> Path:
    """Where the page is, found from this package and never from the working directory.
    Installed from a wheel (``pip install .``), ``static/`` is package data at ``app/static/``
    (pyproject.toml maps it there); in a source checkout, editable installs included, it is
    ``static/`` at the top of the repository, beside ``app/``."""
    installed = PACKAGE_DIR / "static"
    return installed if installed.is_dir() else PROJECT_ROOT / "static"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CNNVIZ_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # "sqlite" keeps sessions in data_dir/sessions.sqlite3 across restarts; "memory" forgets them
    # when the process exits; "redis" keeps them in the Redis server at redis_url, shared by
    # server processes on several hosts (needs the redis extra: pip install .[redis]).
    # A relative data_dir is taken from the working directory.
    session_store: Literal["sqlite", "memory", "redis"] = "sqlite"
    data_dir: Path = Path("data")
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every key this app writes starts with it: deployments sharing one Redis database differ.
    redis_key_prefix: str = Field("cnnviz", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")

    # Origins allowed to call the API from their pages (CORS), comma-separated. Empty: none.
    cors_origins: Annotated[list[str], NoDecode] = []
    # Host names the server answers to besides addresses, localhost and `host` (app.host_check),
    # comma-separated; "*" accepts any.
    allowed_hosts: Annotated[list[str], NoDecode] = []

    # Session store: idle sessions are dropped; at a cap, a session idle for a while makes room,
    # and only sessions in recent use make a new one wait.
    max_sessions: int = Field(64, ge=1)
    max_store_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    session_idle_seconds: float = Field(3600.0, gt=0)
    # When a cap is reached, the least recently used session idle this long makes room.
    session_evict_idle_seconds: float = Field(600.0, gt=0)
    max_history: int = Field(100_000, ge=10)

    # Request bounds.
    max_batch_size: int = Field(256, ge=1)
    max_learning_rate: float = Field(10.0, gt=0)
    max_train_steps: int = Field(500, ge=1)
    # steps x batch_size of one train request: bounds how long a request holds its session.
    max_train_samples: int = Field(32768, ge=1)
    max_eval_samples: int = Field(1000, ge=1)
    max_mnist_page: int = Field(500, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Bodies that are not file uploads (JSON); see app.middleware.
    max_json_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    max_session_file_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    # Network size and work caps (app.limits), tighter than the engine's own sanity limits:
    # LeNet-5 has 61,706 parameters, 9,278 values per sample, 0.42 M multiply-adds forward.
    max_spec_layers: int = Field(32, ge=1)
    max_spec_input_side: int = Field(128, ge=1)
    max_spec_filters: int = Field(256, ge=1)
    max_spec_units: int = Field(4096, ge=1)
    max_spec_parameters: int = Field(1_000_000, ge=1)
    max_spec_activations: int = Field(250_000, ge=1)
    max_session_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # One request: working memory of its largest traced batch, and its multiply-adds
    # (20 G: 200 LeNet-5 steps of 64, under a minute of this engine on one core).
    max_request_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_request_macs: int = Field(20_000_000_000, ge=1)
    # Engine requests computing at once (the rest wait, up to computation_wait_seconds, then 429).
    max_concurrent_computations: int = Field(4, ge=1)
    computation_wait_seconds: float = Field(60.0, gt=0)
    # Threads serving sync routes; each may hold up to 128 MB of the engine's scratch memory.
    worker_threads: int = Field(8, ge=2)

    # Slow clients and open connections (app.server_protocol, used by the cnnviz command): a
    # request's headers must arrive within header_timeout_seconds of its first byte, its body
    # within body_timeout_seconds after them; connections beyond max_connections are closed
    # at once (the command also raises the process's file-descriptor limit to fit them).
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(60.0, gt=0)
    max_connections: int = Field(512, ge=8)

    static_dir: Path = Field(default_factory=default_static_dir)

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
