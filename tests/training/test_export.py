"""Exports of a fine-tuned student (``distillery models export``,
``GET /v1/distillery/models/{id}/export``): the PEFT folder, a merged transformers folder that plain
``AutoModelForCausalLM.from_pretrained`` loads and that answers greedily as the engine answers the
``ft:`` model, and a GGUF file that ``gguf.GGUFReader`` reads back with llama.cpp's tensor names and
shapes (those of the base model's own GGUF) and that transformers loads to the same greedy tokens.

The student is a LoRA adapter of the embedded SmolLM2 with random (not zero) B matrices, made with
PEFT, so that it answers differently from its base (the training itself is tested elsewhere).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillery.services import Services, build_services
from distillery.settings import Settings
from tests.support.live import LiveServer

pytestmark = pytest.mark.local_model

LOCAL = "smollm2-135m-instruct"
FT = f"ft:{LOCAL}:export:abcd1234"
PROMPT = [{"role": "user", "content": "Where do I send an invoice?"}]
TOKENS = 12
DISTILLERY = str(Path(sys.executable).parent / "distillery")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, converted_model: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from distillery import weights

    folder = tmp_path_factory.mktemp("adapter")
    base = weights.load_model(weights.resolve_source(LOCAL, converted_model), dtype="float32")
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(str(folder))  # type: ignore[arg-type]
    return folder


@pytest.fixture
def services(home: Path, adapter: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=home))
    svc.fine_tuned_models.register(
        FT, base_model=LOCAL, provider="local", adapter_path=str(adapter)
    )
    yield svc
    svc.store.close()


def _engine_answer(adapter: Path) -> str:
    """What the in-process engine answers for the ``ft:`` model (greedy, float32)."""
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.serving.adapters import AdapterRef
    from distillery.serving.local import LocalProvider

    provider = LocalProvider("local", LocalProviderConfig(models=[LOCAL]), dtype="float32")
    provider.register_adapter(AdapterRef(FT, LOCAL, str(adapter)))

    async def ask() -> dict[str, Any]:
        try:
            return await provider.create(
                {"model": FT, "messages": PROMPT, "temperature": 0, "max_tokens": TOKENS}
            )
        finally:
            await provider.aclose()

    return str(asyncio.run(ask())["choices"][0]["message"]["content"])


def _greedy(model: Any, tokenizer: Any) -> list[int]:
    import torch

    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt")
    if not isinstance(ids, torch.Tensor):
        ids = ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
    return [int(t) for t in out[0, ids.shape[1] :]]


def test_merged_export_loads_with_plain_transformers_and_answers_as_the_engine(
    services: Services, adapter: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = services.exports.export(FT, "merged", output=tmp_path / "merged")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    tokens = _greedy(model, tokenizer)
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    assert text == _engine_answer(adapter)

    from distillery import weights

    base = weights.load_model(weights.resolve_source(LOCAL), dtype="float32")
    assert _greedy(base, tokenizer) != tokens  # the adapter is in the merged weights


def test_gguf_export_reads_back_with_llama_cpp_names_and_loads_in_transformers(
    services: Services, tmp_path: Path
) -> None:
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distillery import weights

    path = services.exports.export(FT, "gguf", output=tmp_path / "gguf", gguf_type="f32")
    assert path.suffix == ".gguf" and path.parent == tmp_path / "gguf"
    reader = gguf.GGUFReader(str(path))
    base = gguf.GGUFReader(str(weights.embedded_gguf_path(LOCAL)))
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    assert shapes == {t.name: [int(n) for n in t.shape] for t in base.tensors}
    assert "blk.0.attn_q.weight" in shapes and "token_embd.weight" in shapes
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}

    def field(key: str) -> Any:
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama"
    assert field("general.name") == FT
    assert field("general.file_type") == int(gguf.LlamaFileType.ALL_F32)
    assert field("llama.block_count") == 30
    assert field("tokenizer.ggml.model") == base.fields["tokenizer.ggml.model"].contents()
    assert len(field("tokenizer.ggml.tokens")) == 49152
    assert "<|im_start|>" in field("tokenizer.chat_template")

    merged_dir = services.exports.export(FT, "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir), local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, local_files_only=True
    )
    assert _greedy(loaded, tokenizer) == _greedy(merged, tokenizer)

    q8 = services.exports.export(FT, "gguf", gguf_type="q8_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(q8)).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_gguf_export_of_another_architecture_is_a_400_naming_it(
    services: Services, home: Path, tmp_path: Path
) -> None:
    from distillery.errors import InvalidRequestError
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.settings import Config
    from distillery.store.models import FineTunedModelsRepo
    from distillery.training.local.export import ModelExports
    from tests.support.tiny_models import tiny_gemma_dir

    gemma = tiny_gemma_dir(tmp_path / "tiny-gemma")
    folder = tmp_path / "gemma-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    repo = FineTunedModelsRepo(services.store)
    repo.register(
        "ft:tiny-gemma::x", base_model="tiny-gemma", provider="local", adapter_path=str(folder)
    )
    local = LocalProviderConfig(models=["tiny-gemma"], paths={"tiny-gemma": str(gemma)})
    exports = ModelExports(repo, Config(providers={"local": local}).providers, home)
    with pytest.raises(InvalidRequestError) as err:
        exports.export("ft:tiny-gemma::x", "gguf")
    assert err.value.code == "architecture_not_supported" and err.value.param == "format"
    assert "gemma3_text" in err.value.message and "merged" in err.value.message


def test_export_over_http_and_from_the_cli(services: Services, home: Path, tmp_path: Path) -> None:
    from distillery.app import create_app

    server = LiveServer(create_app(services)).start()
    try:
        url = f"{server.url}/v1/distillery/models/{FT}/export"
        with httpx.Client(timeout=300) as http:
            response = http.get(url, params={"format": "peft"})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/x-tar"
            with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
                names = {Path(n).name for n in tar.getnames()}
            assert {"adapter_config.json", "adapter_model.safetensors"} <= names

            response = http.get(url, params={"format": "peft", "archive": "zip"})
            assert response.headers["content-type"] == "application/zip"
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                assert any(n.endswith("adapter_config.json") for n in archive.namelist())

            bad = http.get(url, params={"format": "onnx"})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "format"
            missing = http.get(f"{server.url}/v1/distillery/models/ft:nope:x:y/export")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "model_not_found"
            services.fine_tuned_models.register(
                "ft:gpt-4o:remote:z", base_model="gpt-4o", provider="fake"
            )
            remote = http.get(f"{server.url}/v1/distillery/models/ft:gpt-4o:remote:z/export")
            assert remote.status_code == 400
            assert remote.json()["error"]["code"] == "model_not_exportable"
    finally:
        server.stop()

    out = tmp_path / "cli-peft"
    env = {**os.environ, "DISTILLERY_HOME": str(home)}
    done = subprocess.run(
        [
            DISTILLERY,
            "models",
            "export",
            FT,
            "--format",
            "peft",
            "--output",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"model": FT, "format": "peft", "path": str(out)}
    assert (out / "adapter_config.json").is_file()
    failed = subprocess.run(
        [DISTILLERY, "models", "export", "ft:nope:x:y", "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode == 2 and "does not exist" in failed.stderr
