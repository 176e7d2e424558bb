"""The table of a ``local`` provider: the models served and trained in-process.

It lives here, below both of its readers: ``serving`` builds the ``local`` provider from it
(``serving/local.py``) and the local trainer (``training/local/``) reads the same paths and chat
templates, so a student is trained as it is served.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from distillery.errors import ConfigError
from distillery.settings import ProviderConfig


def _is_template_text(value: str) -> bool:
    """A Jinja template (rather than the path of a file holding one)."""
    return "{{" in value or "{%" in value


class LocalProviderConfig(ProviderConfig):
    """``kind = "local"``: the students served in-process (the embedded ones, or local weights)."""

    KIND = "local"
    paths: dict[str, str] = Field(
        default_factory=dict, description="model name -> local folder or .gguf file"
    )
    device: str | None = Field(
        default=None, description="`cpu` or `cuda`; unset: CUDA when available, else the CPU."
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads for local CPU inference; default every core but one (the "
        "spare keeps HTTP responsive and a concurrent training from stalling generation)",
    )
    max_batch_size: int = Field(
        default=32, description="Sequences generated together per local model."
    )
    max_queue: int = Field(
        default=64,
        description="Requests that wait beyond a full batch; more get a 503 (retry shortly).",
    )
    adapter_memory_mb: int = Field(
        default=512, description="Memory for LoRA adapters kept loaded per local model, in MB."
    )
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
    def _templates_exist(self) -> LocalProviderConfig:
        templates = (
            self.chat_template.values()
            if isinstance(self.chat_template, dict)
            else [self.chat_template or ""]
        )
        for value in templates:
            if value and not _is_template_text(value) and not Path(value).expanduser().is_file():
                raise ValueError(f"chat_template: {value!r} is neither a template nor a file")
        return self

    def served_models(self) -> list[str]:
        return list(dict.fromkeys([*self.models, *self.paths]))

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
