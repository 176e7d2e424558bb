"""``distillery models export MODEL --format peft|merged|gguf --output DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distillery.cli.context import services
from distillery.cli.output import err_console, fail, print_json, progress_bars
from distillery.errors import DistilleryError


def export(
    model: Annotated[str, typer.Argument(help="A fine-tuned model id (ft:...).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write into.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="peft (the adapter folder), merged (a transformers safetensors folder with its "
            "tokenizer and chat template) or gguf (one file for llama.cpp and Ollama).",
        ),
    ] = "merged",
    gguf_type: Annotated[
        str, typer.Option(help="Tensor type of a GGUF export: f32, f16, bf16 or q8_0.")
    ] = "f16",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Export a fine-tuned student in a form other tools load."""
    try:
        with progress_bars(not json_out) as progress:
            path = services().exports.export(
                model, fmt, output=output, gguf_type=gguf_type, progress=progress
            )
    except DistilleryError as exc:
        raise fail(exc) from None
    if json_out:
        print_json({"model": model, "format": fmt, "path": str(path)})
    else:
        err_console.print(f"exported {model} ({fmt}) to {path}")
