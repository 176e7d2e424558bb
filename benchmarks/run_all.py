"""`make bench`: every benchmark, each side by side with its anchor, results to stdout.

Copy the tables into benchmarks/RESULTS.md with the date and the machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = [
    ["bench_gateway.py"],
    ["bench_responses.py"],
    ["bench_routes.py"],
    ["bench_vllm.py"],
    ["bench_redaction.py"],
    ["bench_store_list.py", "--postgres"],
    ["bench_graders.py"],
    ["bench_local_inference.py"],
    ["bench_structured.py"],  # structured answers: logits for the allowed tokens only
    ["bench_training.py"],
    ["bench_greedy.py"],  # the validation measure's generation, per epoch
    # the demo task's accuracy per epoch ("it learns"), for both embedded students
    ["bench_distill.py", "--every-epoch", "--student", "gemma-3-270m"],
    ["bench_distill.py", "--every-epoch", "--student", "smollm2-135m-instruct"],
    # unseen public tasks with the defaults (PRODUCT.md 4): CLINC150's curve over examples per
    # intent, and SNIPS intents + slots; --quick makes each a smoke test (2 per label)
    ["bench_public_tasks.py", "--task", "clinc150", "--per-label", "8"],
    ["bench_public_tasks.py", "--task", "clinc150", "--per-label", "16"],
    ["bench_public_tasks.py", "--task", "clinc150", "--per-label", "32"],
    [
        "bench_public_tasks.py",
        "--task",
        "clinc150",
        "--per-label",
        "8",
        "--student",
        "smollm2-135m-instruct",
    ],
    ["bench_public_tasks.py", "--task", "snips", "--per-label", "8"],
    ["bench_public_tasks.py", "--task", "snips", "--per-label", "32"],
]


def main() -> None:
    quick = "--quick" in sys.argv
    failed = []
    for bench in BENCHES:
        if quick and bench[0] == "bench_public_tasks.py" and "8" not in bench:
            continue  # --quick trains 2 per label whatever --per-label says: one run is enough
        args = [sys.executable, str(HERE / bench[0]), *bench[1:]]
        if quick and bench[0] != "bench_store_list.py":
            args.append("--quick")
        if quick and bench[0] == "bench_store_list.py":
            args += ["--rows", "100000"]
        print(f"\n## {bench[0]}\n", flush=True)
        if subprocess.run(args, check=False).returncode != 0:
            failed.append(bench[0])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
