"""One-shot GPU check: the device, LoRA training, data parallelism and serving, into one JSON.

Written for a CUDA machine without internet (everything comes from the checkout, its .venv and
the embedded models' wheels); each stage is independent, so one run on a scarce GPU records every
figure it can:

1. ``device``: name, count, memory, torch / CUDA versions, and the bf16 matmul peak measured in
   the same run (square matmul, 8192 on CUDA, warm-ups, then a timed loop: TFLOP/s).
2. ``training``: a short LoRA training through ``LocalSFTTrainer`` (bf16 where the trainer picks
   it, i.e. CUDA with bf16) of each embedded student and of a tiny random Qwen3 built here from a
   ``Qwen3Config``: tokens/s, steps/s, MFU against the measured peak, peak CUDA memory.
3. ``data_parallel``: with more than one GPU, the same training of ``smollm2-135m-instruct`` with
   ``devices = N``, launched as the product launches it (``backend.worker_command``).
4. ``serving``: ``LocalProvider`` (the engine) on ``smollm2-135m-instruct`` at 1, 8 and 64
   concurrent chat requests: requests/s, output tokens/s, p50 latency.

MFU = steady tokens/s (all optimizer steps but the first) x 6 N / peak, recorded for two N:
``mfu_6n_all`` with N = all parameters (embeddings included: the plain 6N convention) and
``mfu_6n_decoder`` with N = the frozen decoder-layer parameters (embeddings, lm_head and adapters
excluded, as ``bench_training.py`` counts N). On the tiny Qwen3 and the 135M/270M students the
embeddings are a large share of N but cost no matmul (and the trainer applies lm_head only at loss
positions), so ``mfu_6n_decoder`` is the closer figure. Both overstate LoRA's work a little the
other way: the frozen base gets no weight gradients (about 4N rather than 6N per token).

    bash benchmarks/gpu_check.sh                                  # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --cpu --quick        # the same code paths, tiny, CPU

The JSON goes to ``--json``, else ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``benchmarks/gpu_check.json``; it is rewritten after every stage. Exit status: 0 when every stage
succeeded, 1 when one failed (its ``error`` is in the JSON), 2 without CUDA and without ``--cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_local_inference import body  # sets HF_HUB_OFFLINE first
from bench_training import make_records, step_figures

STUDENTS = ("smollm2-135m-instruct", "gemma-3-270m")
TINY_QWEN3 = "tiny-qwen3"
SERVED = "smollm2-135m-instruct"
NO_CUDA = "no CUDA device: run on a GPU machine, or pass --cpu --quick to test the script"


def log(message: str) -> None:
    """A progress line with a timestamp."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_stage(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s figures, or its error (type, message, traceback tail); never raises."""
    log(f"stage {name}: start")
    start = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:
        log(f"stage {name}: FAILED: {type(exc).__name__}: {exc}")
        out = {
            "error": {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(limit=8).splitlines()[-12:],
            }
        }
    out["stage_seconds"] = round(time.perf_counter() - start, 2)
    log(f"stage {name}: done in {out['stage_seconds']} s")
    return out


def free_memory() -> None:
    """Drop what the last stage left behind (CUDA caching allocator included)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- 1. the device -----------------------------------------------------------------------------


def matmul_tflops(device: str, size: int, warmups: int = 3, iters: int = 20) -> float:
    """bf16 TFLOP/s of ``iters`` back-to-back ``size`` x ``size`` matmuls after ``warmups``.

    (``bench_training.matmul_peak`` times single matmuls, which on a GPU mostly measures the
    launch and synchronisation overhead; this times a loop between two synchronisations.)
    """
    import torch

    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmups):
        torch.matmul(a, b)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        torch.matmul(a, b)
    sync()
    return 2 * size**3 * iters / (time.perf_counter() - start) / 1e12


def device_info(device: str, size: int) -> dict[str, Any]:
    """What the machine is, and its measured bf16 matmul peak."""
    import torch
    import transformers

    from distillery import weights

    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if device == "cuda":
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        info.update(
            count=len(props),
            names=[p.name for p in props],
            memory_gib=[round(p.total_memory / 2**30, 1) for p in props],
            capability=[f"{p.major}.{p.minor}" for p in props],
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info.update(count=0, threads=torch.get_num_threads(), cpu_bf16=weights.cpu_supports_bf16())
    info["matmul_size"] = size
    info["peak_bf16_tflops"] = matmul_tflops(device, size)
    log(f"device: {info.get('names') or 'cpu'}, bf16 peak {info['peak_bf16_tflops']:.2f} TFLOP/s")
    return info


# -- 2. training -------------------------------------------------------------------------------


def write_training_file(path: Path, n: int) -> Path:
    """``n`` synthetic bilingual routing conversations (``bench_training.make_records``)."""
    records = make_records(n)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def tiny_qwen3_dir(folder: Path, *, hidden: int, layers: int) -> Path:
    """A random-weight Qwen3 (no download) with the embedded SmolLM2 tokenizer and its ChatML
    template, saved as a transformers folder the trainer loads through ``base_model_path``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from distillery import weights

    tokenizer = weights.load_tokenizer(weights.resolve_source(SERVED))
    heads = max(2, hidden // 64)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden // heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def decoder_parameters(student: Any) -> int:
    """Frozen parameters of the decoder body less its input embeddings (N of ``mfu_6n_decoder``)."""
    body = student.body
    frozen = sum(p.numel() for p in body.parameters() if not p.requires_grad)
    return frozen - sum(p.numel() for p in body.get_input_embeddings().parameters())


def mfu_figures(
    tokens_per_second: float, n_all: int, n_decoder: int, peak: float | None
) -> dict[str, Any]:
    """6N model-FLOPs utilisation of ``tokens_per_second`` against the measured ``peak`` TFLOP/s,
    with N = all parameters and with N = decoder-layer parameters."""
    if not peak:
        return {"mfu_6n_all": None, "mfu_6n_decoder": None}
    return {
        "mfu_6n_all": 6 * n_all * tokens_per_second / (peak * 1e12),
        "mfu_6n_decoder": 6 * n_decoder * tokens_per_second / (peak * 1e12),
    }


def train_once(
    name: str, path: Path | None, train_file: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One epoch of LoRA over ``train_file`` through ``LocalSFTTrainer``; its throughput."""
    import torch

    from distillery.training.local.config import LocalSFTConfig
    from distillery.training.local.trainer import LocalSFTTrainer

    config = LocalSFTConfig(
        base_model=name,
        base_model_path=str(path) if path else None,
        n_epochs=1,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads if args.device == "cpu" else None,
        warmup_ratio=0.0,
        max_length=512,
    )

    def emit(type_: str, level: str, message: str, data: dict[str, Any] | None) -> None:
        if type_ == "message":
            log(f"  {name}: {message}")

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = LocalSFTTrainer(config, train_file, None, out, emit=emit)
    result = trainer.run()
    seconds = float(trainer.training_seconds)
    steps = len(trainer.step_timings)
    figures = step_figures(trainer.step_timings)
    n_params = int(trainer.student.n_params)
    n_decoder = decoder_parameters(trainer.student)
    return {
        "device": str(trainer.device),
        "bf16": bool(trainer.use_bf16),
        "packing": bool(trainer.use_packing),
        "examples": len(trainer.train_data.examples),
        "batch_size": args.batch_size,
        "steps": steps,
        "tokens": int(result.trained_tokens),
        "training_seconds": seconds,
        "tokens_per_second": result.trained_tokens / seconds,
        "steps_per_second": steps / seconds,
        **figures,
        "parameters": n_params,
        "decoder_parameters": n_decoder,
        "trainable_parameters": int(trainer.student.n_trainable),
        **mfu_figures(figures["steady_tokens_per_second"], n_params, n_decoder, args.peak_tflops),
        "max_memory_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "final_train_loss": result.metrics.get("train_loss"),
    }


def training_models(
    args: argparse.Namespace, work: Path
) -> list[tuple[str, Callable[[], Path | None]]]:
    """(name, path factory) of the models to train: the embedded students need no path."""
    hidden, layers = (128, 2) if args.quick else (256, 4)

    def tiny() -> Path:
        if not (work / TINY_QWEN3 / "config.json").is_file():
            tiny_qwen3_dir(work / TINY_QWEN3, hidden=hidden, layers=layers)
        return work / TINY_QWEN3

    students: list[tuple[str, Callable[[], Path | None]]] = [
        (s, lambda: None) for s in (() if args.quick else STUDENTS)
    ]
    return [*students, (TINY_QWEN3, tiny)]


def training_stage(
    name: str, make_path: Callable[[], Path | None], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The training figures of one model (its own stage)."""
    try:
        path = make_path()
        out = work / f"out-{name}"
        figures = train_once(name, path, args.train_file, out, args)
    finally:
        free_memory()
    log(
        f"  {name}: {figures['tokens_per_second']:.0f} tok/s, {figures['steps_per_second']:.2f} "
        f"steps/s, MFU(6N decoder) {figures['mfu_6n_decoder'] or 0:.1%}, peak memory {figures['max_memory_allocated_gib'] or 0:.2f} GiB"
    )
    return figures


# -- 3. data parallel --------------------------------------------------------------------------


def data_parallel(
    name: str, path: Path | None, devices: int, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The same training with ``devices`` processes, through the worker and its launcher."""
    from distillery.training.local.backend import RESULT_FILE, worker_command

    job_dir = work / f"dp-{devices}"
    job_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "base_model": name,
        "base_model_path": str(path) if path else None,
        "n_epochs": 1,
        "batch_size": args.batch_size,
        "device": args.device,
        "devices": devices,
        "warmup_ratio": 0.0,
        "max_length": 512,
    }
    if args.device == "cpu":
        config["threads"] = max(1, args.threads // devices)
    job = {"config": config, "training_file": str(args.train_file), "validation_file": None}
    (job_dir / "job.json").write_text(json.dumps(job))
    command = worker_command(job_dir, devices=devices)
    log(f"  {' '.join(command)}")
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=args.dp_timeout, check=False
    )
    result = (
        json.loads((job_dir / RESULT_FILE).read_text()) if (job_dir / RESULT_FILE).is_file() else {}
    )
    if proc.returncode != 0 or result.get("status") != "succeeded":
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise RuntimeError(f"worker exited {proc.returncode}, result {result.get('error')}: {tail}")
    seconds = float(result["metrics"]["training_seconds"])
    tokens = int(result["trained_tokens"])
    return {
        "model": name,
        "devices": devices,
        "device": args.device,
        "tokens": tokens,
        "training_seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "final_train_loss": result["metrics"].get("train_loss"),
    }


def parallel_stage(results: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``devices = N`` training when N > 1 GPUs (or ``--parallel-devices``); else skipped."""
    import torch

    devices = args.parallel_devices or (torch.cuda.device_count() if args.device == "cuda" else 1)
    if devices <= 1:
        return {
            "skipped": "one GPU" if args.device == "cuda" else "cpu mode (no --parallel-devices)"
        }
    name, path = (TINY_QWEN3, work / TINY_QWEN3) if args.quick else (SERVED, None)
    if args.quick and not path.is_dir():
        tiny_qwen3_dir(path, hidden=128, layers=2)
    out = data_parallel(name, path if args.quick else None, devices, work, args)
    single = results["training"].get(name, {}).get("tokens_per_second")
    out["speedup_vs_one"] = out["tokens_per_second"] / single if single else None
    log(
        f"  {devices} processes: {out['tokens_per_second']:.0f} tok/s (x{out['speedup_vs_one'] or 0:.2f})"
    )
    return out


# -- 4. serving --------------------------------------------------------------------------------


async def timed_create(provider: Any, i: int, max_tokens: int) -> tuple[float, int]:
    """One chat completion: (latency in seconds, completion tokens)."""
    start = time.perf_counter()
    response = await provider.create(body(i, max_tokens))
    return time.perf_counter() - start, int(response["usage"]["completion_tokens"])


async def closed_loop(
    provider: Any, concurrency: int, rounds: int, max_tokens: int
) -> dict[str, Any]:
    """``concurrency`` clients, each sending ``rounds`` requests back to back."""

    async def client(c: int) -> list[tuple[float, int]]:
        return [await timed_create(provider, c * rounds + r, max_tokens) for r in range(rounds)]

    start = time.perf_counter()
    per_client = await asyncio.gather(*(client(c) for c in range(concurrency)))
    seconds = time.perf_counter() - start
    done = [x for xs in per_client for x in xs]
    latencies = [lat for lat, _ in done]
    tokens = sum(n for _, n in done)
    return {
        "concurrency": concurrency,
        "requests": len(done),
        "seconds": seconds,
        "requests_per_second": len(done) / seconds,
        "output_tokens": tokens,
        "output_tokens_per_second": tokens / seconds,
        "p50_latency_s": statistics.median(latencies),
        "max_latency_s": max(latencies),
    }


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    """The provider's engine at each concurrency, after a warm-up request."""
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.serving import LocalProvider

    top = max(args.concurrency)
    config = LocalProviderConfig(
        models=[SERVED], device=args.device, max_batch_size=top, max_queue=max(64, top)
    )
    provider = LocalProvider("local", config)
    runs = []
    try:
        await provider.create(body(0, 4))  # load and warm up
        status = provider.status()[0]
        for concurrency in args.concurrency:
            run = await closed_loop(provider, concurrency, args.rounds, args.max_tokens)
            log(
                f"  {concurrency:>3} concurrent: {run['requests_per_second']:.2f} req/s, "
                f"{run['output_tokens_per_second']:.0f} tok/s, p50 {run['p50_latency_s']:.2f} s"
            )
            runs.append(run)
    finally:
        await provider.aclose()
    return {
        "model": SERVED,
        "engine_device": status.device,
        "engine_dtype": status.dtype,
        "max_tokens": args.max_tokens,
        "rounds_per_client": args.rounds,
        "runs": runs,
    }


def serving_stage(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return asyncio.run(serve(args))
    finally:
        free_memory()


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (to test the script)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny scale: tiny Qwen3, few steps/tokens"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument("--examples", type=int, default=None, help="training examples")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--parallel-devices", type=int, default=None, help="force devices=N")
    parser.add_argument("--dp-timeout", type=int, default=600, help="data-parallel run limit (s)")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.cpu else "cuda"
    args.examples = args.examples or (16 if args.quick else 512)
    args.batch_size = args.batch_size or (4 if args.quick else 32)
    args.concurrency = [1, 2] if args.quick else [1, 8, 64]
    args.rounds = 2 if args.quick else 4
    args.max_tokens = 8 if args.quick else 128
    args.matmul_size = 512 if args.quick else 8192
    args.peak_tflops = None
    return args


def default_json() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else Path(__file__).parent / "gpu_check.json"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.cpu:
        torch.set_num_threads(args.threads)
    path = args.json or default_json()
    started = time.perf_counter()
    results: dict[str, Any] = {"mode": args.device, "quick": args.quick, "training": {}}

    def save() -> None:
        stages = [results.get("device"), *results["training"].values()]
        stages += [results.get("data_parallel"), results.get("serving")]
        results["failed"] = sum(1 for s in stages if s and "error" in s)
        results["wall_seconds"] = round(time.perf_counter() - started, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        results["device"] = run_stage("device", lambda: device_info(args.device, args.matmul_size))
        args.peak_tflops = results["device"].get("peak_bf16_tflops")
        save()
        args.train_file = write_training_file(work / "train.jsonl", args.examples)
        for name, make_path in training_models(args, work):
            results["training"][name] = run_stage(
                f"training {name}", lambda n=name, m=make_path: training_stage(n, m, work, args)
            )
            save()
        results["data_parallel"] = run_stage(
            "data_parallel", lambda: parallel_stage(results, work, args)
        )
        save()
        results["serving"] = run_stage("serving", lambda: serving_stage(args))
        save()
    print(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    log(f"wrote {path} in {results['wall_seconds']} s; {results['failed']} stage(s) failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
