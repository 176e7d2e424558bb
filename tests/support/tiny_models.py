"""Small tokenizers and models built offline (no hub, no big files), of a given model family.

``tiny_tokenizer_dir(folder, "gemma3_text", GEMMA_SPECIALS)`` trains a byte-level BPE of a few
hundred tokens on a short bilingual text, registers the family's special tokens, and saves a
transformers folder with a ``config.json`` of that ``model_type`` and no chat template: the shape
of a pretrained checkpoint (the embedded Gemma 3 270M GGUF has no template either).
``tiny_gemma_dir(folder)`` adds random weights of a 2-layer Gemma 3 (full attention only) to it.
"""

from __future__ import annotations

import json
from pathlib import Path

GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
PLAIN_SPECIALS = ("<pad>", "</s>", "<s>", "<unk>")

_CORPUS = [
    "You are a helpful assistant. Answer briefly and politely.",
    "What is the capital of France? The capital of France is Paris.",
    "Route this question: my VPN does not connect. It is an IT question.",
    "経費精算の締め日はいつですか？ 経理に聞いてください。",
    "Hello there, how are you today? I am fine, thank you.",
    "user model assistant system JSON reason category answer question",
]


def tiny_tokenizer_dir(folder: Path, model_type: str, specials: tuple[str, ...]) -> Path:
    """A transformers folder holding only a tokenizer (and a config naming ``model_type``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=specials[3] if len(specials) > 3 else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    names = {
        "gemma3_text": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
        "qwen2": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    }.get(model_type, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def tiny_gemma_dir(folder: Path) -> Path:
    """A servable Gemma 3 of 2 tiny layers with random weights and no chat template."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tiny_tokenizer_dir(folder, "gemma3_text", GEMMA_SPECIALS)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=400,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        layer_types=["full_attention"] * 2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    Gemma3ForCausalLM(config).save_pretrained(str(folder))
    return folder
