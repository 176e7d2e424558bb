"""Tiny random models of the attention families the engine and the packed trainer handle.

``tiny_family_dir(folder, family)`` saves a transformers folder: a few layers of width 64, fp32,
with the family's attention layout and a window shorter than the test prompts
(``WINDOWS[family]``): Gemma 3 slides five layers of six, Qwen2/Qwen3 slide their upper layers
(``use_sliding_window``, ``max_window_layers``), Mistral and Phi-3 slide every layer, Llama none.
``initializer_range`` is large so that greedy choices are never near ties.

The tokenizer is word-level over single CJK characters (one character per id; ``</s>`` = 1 and ``<s>`` = 2
the only special tokens), so decoded text maps back to exactly one id sequence: comparing texts
compares tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES = ("llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3")
WINDOWS: dict[str, int | None] = {
    "llama": None,
    "qwen2": 12,
    "qwen3": 10,
    "gemma3": 8,
    "mistral": 12,
    "phi3": 11,
}
VOCAB = 256
EOS = 1
BOS = 2
_MODEL_TYPES = {"gemma3": "gemma3_text"}


def word_tokenizer_dir(folder: Path, model_type: str) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(0x4E00 + i): i for i in range(VOCAB)}
    del vocab[chr(0x4E00 + EOS)], vocab[chr(0x4E00 + BOS)]
    vocab["</s>"], vocab["<s>"] = EOS, BOS
    tok = Tokenizer(models.WordLevel(vocab, unk_token=chr(0x4E00)))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="</s>", bos_token="<s>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def family_config(family: str) -> Any:
    import transformers

    window = WINDOWS[family]
    common: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "initializer_range": 0.2,
        "eos_token_id": EOS,
        "bos_token_id": BOS,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    }
    if family == "llama":
        return transformers.LlamaConfig(**common)
    if family in ("qwen2", "qwen3"):
        cls = transformers.Qwen2Config if family == "qwen2" else transformers.Qwen3Config
        extra = {"head_dim": 16} if family == "qwen3" else {}
        return cls(
            **common, **extra, use_sliding_window=True, sliding_window=window, max_window_layers=2
        )
    if family == "gemma3":
        common["num_hidden_layers"] = 6
        return transformers.Gemma3TextConfig(
            **common,
            head_dim=16,
            sliding_window=window,
            layer_types=["sliding_attention"] * 5 + ["full_attention"],
        )
    if family == "mistral":
        return transformers.MistralConfig(**common, sliding_window=window)
    if family == "phi3":
        return transformers.Phi3Config(**common, sliding_window=window)
    raise ValueError(family)


def tiny_family_dir(folder: Path, family: str, *, seed: int = 0) -> Path:
    """A servable, trainable tiny model of ``family`` with random weights (see the module doc)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = family_config(family)
    word_tokenizer_dir(folder, _MODEL_TYPES.get(family, family))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(str(folder))
    return folder


def random_lora_dir(base: Path, folder: Path, *, seed: int = 1) -> Path:
    """A PEFT LoRA adapter of ``base`` on every linear layer, with random non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(str(folder))
    return folder
