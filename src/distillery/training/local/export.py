"""Exports of a fine-tuned student that other tools load (``distillery models export``,
``GET /v1/distillery/models/{id}/export``).

- ``peft``: the LoRA adapter folder as the trainer wrote it (``adapter_config.json``,
  ``adapter_model.safetensors``, the tokenizer), for PEFT, vLLM's ``--lora-modules`` or SGLang.
- ``merged``: the base model with the adapter merged in (PEFT ``merge_and_unload``), saved as
  safetensors with its tokenizer and chat template: a plain transformers folder (a full
  fine-tune's folder is already one, and is saved the same way).
- ``gguf``: one GGUF file for llama.cpp and Ollama, written with the ``gguf`` package's
  ``GGUFWriter``: the merged weights under llama.cpp's tensor names
  (``gguf.get_tensor_name_map``), with the query/key rows permuted as llama.cpp's
  ``convert_hf_to_gguf.py`` does for the Llama architecture, in ``f32``, ``f16``, ``bf16`` or
  ``q8_0``; the metadata (hyperparameters and tokenizer: tokens, types, merges, special ids) comes
  from the GGUF the base model was loaded from (the embedded students ship as GGUF), the chat
  template from the one the student is served with. A base of another architecture, or one that
  was not loaded from a GGUF, is a 400 that says so.

Exports are written once per model and format under ``$DISTILLERY_HOME/exports/`` (a fine-tune
never changes) and copied to ``output`` when one is given. torch, peft, transformers and gguf are
imported inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from distillery import chat_templates, weights
from distillery.errors import InvalidRequestError, NotFoundError
from distillery.progress import ProgressCallback, ProgressEvent
from distillery.providers.local_config import LocalProviderConfig
from distillery.settings import ProviderConfig
from distillery.store.models import FineTunedModel, FineTunedModelsRepo

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ExportFormat = Literal["peft", "merged", "gguf"]
FORMATS: tuple[ExportFormat, ...] = ("peft", "merged", "gguf")
GGUFType = Literal["f32", "f16", "bf16", "q8_0"]
GGUF_TYPES: tuple[GGUFType, ...] = ("f32", "f16", "bf16", "q8_0")
GGUF_ARCHITECTURES = ("llama",)  # the architectures whose tensors this writer names

_ADAPTER_CONFIG = "adapter_config.json"
_TASK = "export"
# Copied from the base's GGUF except these (the writer sets them for the new file).
_OWN_KEYS = (
    "general.architecture",
    "general.file_type",
    "general.name",
    "general.quantization_version",
    "tokenizer.chat_template",
)


def safe_name(model_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.") or "model"
    return f"{slug[:100]}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


class ModelExports:
    """Exports of the fine-tuned models in ``models`` (their bases served by ``providers``)."""

    def __init__(
        self, models: FineTunedModelsRepo, providers: Mapping[str, ProviderConfig], home: Path
    ) -> None:
        self.models = models
        self.providers = dict(providers)
        self.root = home / "exports"

    def export(
        self,
        model_id: str,
        fmt: str,
        *,
        output: Path | None = None,
        gguf_type: str = "f16",
        progress: ProgressCallback | None = None,
    ) -> Path:
        """The export of ``model_id`` in ``fmt``: a folder (``peft``, ``merged``) or a ``.gguf``
        file, copied into ``output`` (a folder, created) when given."""
        model = self.models.get(model_id)
        if model is None:
            raise NotFoundError(
                f"The model `{model_id}` does not exist or is not a fine-tuned model.",
                param="model",
                code="model_not_found",
            )
        if fmt not in FORMATS:
            raise InvalidRequestError(
                f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", param="format"
            )
        if gguf_type not in GGUF_TYPES:
            raise InvalidRequestError(
                f"gguf_type must be one of {', '.join(GGUF_TYPES)}, not {gguf_type!r}",
                param="gguf_type",
            )
        if model.adapter_path is None or not Path(model.adapter_path).is_dir():
            raise InvalidRequestError(
                f"The model `{model_id}` was trained by provider {model.provider!r}, which keeps "
                "its weights: only students trained here can be exported.",
                param="model",
                code="model_not_exportable",
            )
        name = safe_name(model_id)
        cache = self.root / name
        if fmt == "peft":
            built = self._peft(model, cache / "peft")
        elif fmt == "merged":
            built = self._merged(model, cache / "merged", progress)
        else:
            built = self._gguf(model, cache / f"gguf-{gguf_type}", name, gguf_type, progress)
        if output is None:
            return built
        output.mkdir(parents=True, exist_ok=True)
        if built.is_file():
            target = output / built.name
            shutil.copyfile(built, target)
            return target
        shutil.copytree(built, output, dirs_exist_ok=True)
        return output

    # -- formats ----------------------------------------------------------------------------------

    def _peft(self, model: FineTunedModel, target: Path) -> Path:
        source = Path(str(model.adapter_path))
        if not (source / _ADAPTER_CONFIG).is_file():
            raise InvalidRequestError(
                f"The model `{model.id}` is a full fine-tune, not a LoRA adapter: export it with "
                "format=merged or format=gguf.",
                param="format",
                code="not_an_adapter",
            )
        if not (target / _ADAPTER_CONFIG).is_file():
            _atomic_copytree(source, target)
        return target

    def _merged(
        self, model: FineTunedModel, target: Path, progress: ProgressCallback | None
    ) -> Path:
        if (target / "config.json").is_file():
            return target
        merged, tokenizer = self._merge(model, progress)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _emit(progress, 2, "saving safetensors")
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "distillery_export.json").write_text(
            json.dumps({"model": model.id, "base_model": model.base_model, "format": "merged"})
        )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        _emit(progress, 3, "done")
        return target

    def _gguf(
        self,
        model: FineTunedModel,
        folder: Path,
        name: str,
        gguf_type: str,
        progress: ProgressCallback | None,
    ) -> Path:
        target = folder / f"{name}.{gguf_type}.gguf"
        if target.is_file():
            return target
        self._check_architecture(model, self._architecture(model))
        import gguf

        reader = gguf.GGUFReader(str(self._base_gguf(model)))
        self._check_architecture(model, str(reader.fields["general.architecture"].contents()))
        merged, tokenizer = self._merge(model, progress)
        _emit(progress, 2, f"writing GGUF ({gguf_type})")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.tmp"
        _write_llama_gguf(tmp, reader, merged, tokenizer, model.id, gguf_type)
        tmp.rename(target)
        _emit(progress, 3, "done")
        return target

    # -- pieces ---------------------------------------------------------------------------------

    def _provider(self, model: FineTunedModel) -> LocalProviderConfig:
        config = self.providers.get(model.provider)
        if isinstance(config, LocalProviderConfig):
            return config
        for candidate in self.providers.values():
            if isinstance(candidate, LocalProviderConfig) and model.base_model in candidate.models:
                return candidate
        raise InvalidRequestError(
            f"The base model `{model.base_model}` of `{model.id}` is not served by a local "
            "provider, so its weights are not here to merge.",
            param="model",
            code="base_model_unavailable",
        )

    def _architecture(self, model: FineTunedModel) -> str:
        """The ``model_type`` of the fine-tune's base (or of a full fine-tune's own folder)."""
        adapter = Path(str(model.adapter_path))
        if (adapter / "config.json").is_file() and not (adapter / _ADAPTER_CONFIG).is_file():
            folder = adapter
        else:
            path = self._provider(model).paths.get(model.base_model)
            folder = weights.materialize(weights.resolve_source(model.base_model, path)).path
        return chat_templates.model_type_of(folder) or "unknown"

    @staticmethod
    def _check_architecture(model: FineTunedModel, arch: str) -> None:
        if arch not in GGUF_ARCHITECTURES:
            raise InvalidRequestError(
                f"GGUF export covers the {', '.join(GGUF_ARCHITECTURES)} architecture; the base "
                f"model `{model.base_model}` of `{model.id}` is `{arch}`: export format=merged "
                "and convert it with llama.cpp's convert_hf_to_gguf.py.",
                param="format",
                code="architecture_not_supported",
            )

    def _base_gguf(self, model: FineTunedModel) -> Path:
        """The GGUF file the base model was loaded from (its metadata and tokenizer)."""
        path = self._provider(model).paths.get(model.base_model)
        if path is not None:
            source = weights.resolve_source(model.base_model, path)
            if source.gguf_file is not None:
                return source.path / source.gguf_file
        elif model.base_model in weights.EMBEDDED_MODELS:
            embedded = weights.EMBEDDED_MODELS[model.base_model]
            if not embedded.chunks:
                return weights.embedded_gguf_path(model.base_model)
        raise InvalidRequestError(
            f"GGUF export needs a base model loaded from a GGUF file (its tokenizer and "
            f"hyperparameters are taken from it); `{model.base_model}` is not: export "
            "format=merged and convert it with llama.cpp's convert_hf_to_gguf.py.",
            param="format",
            code="architecture_not_supported",
        )

    def _merge(
        self, model: FineTunedModel, progress: ProgressCallback | None
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The fine-tune as one float32 transformers model, with the tokenizer it is served with."""
        provider = self._provider(model)
        adapter = Path(str(model.adapter_path))
        template = provider.chat_template_for(model.base_model)
        _emit(progress, 0, "loading the base model")
        if not (adapter / _ADAPTER_CONFIG).is_file():  # a full fine-tune: a model of its own
            source = weights.resolve_source(model.id, adapter)
            merged = weights.load_model(source, dtype="float32", device="cpu")
            return merged, weights.load_tokenizer(source)
        from peft import PeftModel

        source = weights.resolve_source(model.base_model, provider.paths.get(model.base_model))
        base = weights.load_model(source, dtype="float32", device="cpu")
        tokenizer = weights.load_tokenizer(source, chat_template=template)
        _emit(progress, 1, "merging the adapter")
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
        return merged, tokenizer  # type: ignore[return-value]


def _emit(progress: ProgressCallback | None, step: int, message: str) -> None:
    if progress is not None:
        progress(ProgressEvent(_TASK, step, 3, message=message))


def _atomic_copytree(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _permute(data: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """llama.cpp's row order for a Llama query/key projection (``LlamaModel.permute``)."""
    rows = data.shape[0]
    return (
        data.reshape(n_head, 2, rows // n_head // 2, *data.shape[1:])
        .swapaxes(1, 2)
        .reshape(data.shape)
    )


def _write_llama_gguf(
    path: Path,
    reader: Any,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_id: str,
    gguf_type: str,
) -> None:
    import gguf
    import numpy as np

    config = model.config
    n_layers = int(config.num_hidden_layers)
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    expected = {
        "llama.block_count": n_layers,
        "llama.embedding_length": int(config.hidden_size),
        "llama.attention.head_count": n_head,
        "llama.attention.head_count_kv": n_kv,
    }
    for key, value in expected.items():
        field = reader.fields.get(key)
        if field is not None and int(field.contents()) != value:
            raise InvalidRequestError(
                f"the base model's GGUF says {key} = {field.contents()}, its weights {value}",
                code="base_model_mismatch",
            )
    qtype = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[gguf_type]
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[gguf_type]

    writer = gguf.GGUFWriter(str(path), "llama")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in _OWN_KEYS:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    writer.add_name(model_id)
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if (hf_name == "lm_head.weight" and tied) or "rotary_emb" in hf_name:
            continue
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise InvalidRequestError(
                f"tensor {hf_name!r} has no llama.cpp name: the model is not a plain Llama",
                param="format",
                code="architecture_not_supported",
            )
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute(data, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute(data, n_kv)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(new_name, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(new_name, data.astype(np.float16))
        else:
            writer.add_tensor(new_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
