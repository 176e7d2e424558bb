"""List stored completions with a metadata filter over many rows, SQLite and PostgreSQL.

Usage: python benchmarks/bench_store_list.py [--rows 1000000] [--postgres]
Bar (PRODUCT.md §4): p50 at most 10 ms at 1M rows on both databases.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from distillery.store import Store
from distillery.store.completions import CompletionsRepo
from distillery.store.records import NewCompletion

PROMPTS = ["router", "summarize", "extract", "reply", "classify"]


def fill(repo: CompletionsRepo, rows: int) -> float:
    t0 = time.perf_counter()
    batch: list[NewCompletion] = []
    for i in range(rows):
        batch.append(
            NewCompletion(
                id=f"chatcmpl-b{i:09d}",
                created_at=1_700_000_000 + i,
                model=f"m{i % 3}",
                provider="p",
                status="completed",
                stream=False,
                request={"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]},
                response={
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}}]
                },
                error=None,
                metadata={
                    "prompt": PROMPTS[i % 5],
                    "prompt_version": f"v{i % 7}",
                    "user": str(i % 1000),
                },
                prompt_tokens=100,
                completion_tokens=10,
            )
        )
        if len(batch) == 5000:
            repo.insert_many(batch)
            batch = []
    repo.insert_many(batch)
    return time.perf_counter() - t0


def measure(repo: CompletionsRepo, n: int = 200) -> dict[str, float]:
    cases = {
        "metadata prompt=router, first page": lambda: repo.list(
            metadata={"prompt": "router"}, limit=20
        ),
        "metadata prompt=router, desc": lambda: repo.list(
            metadata={"prompt": "router"}, limit=20, order="desc"
        ),
        "two metadata pairs": lambda: repo.list(
            metadata={"prompt": "router", "prompt_version": "v3"}, limit=20
        ),
        "rare value (user=7)": lambda: repo.list(metadata={"user": "7"}, limit=20),
        "model + metadata": lambda: repo.list(model="m1", metadata={"prompt": "extract"}, limit=20),
    }
    out = {}
    for name, fn in cases.items():
        fn()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--postgres", action="store_true", help="also run on a throwaway PostgreSQL")
    args = ap.parse_args()
    urls = {"sqlite": f"sqlite:///{tempfile.mkdtemp()}/bench.db"}
    pg = None
    if args.postgres:
        sys.path.insert(
            0, str(Path(__file__).resolve().parent.parent)
        )  # the repo root: tests.support
        from tests.support.pgserver import PostgresServer

        pg = PostgresServer()
        pg.start()
        urls["postgresql"] = pg.create_database("bench")
    try:
        results = {}
        for name, url in urls.items():
            store = Store.open(url)
            repo = CompletionsRepo(store)
            seconds = fill(repo, args.rows)
            print(
                f"{name}: inserted {args.rows:,} rows in {seconds:.0f} s ({args.rows / seconds:,.0f} rows/s)"
            )
            results[name] = measure(repo)
            store.close()
        print(f"\n| query ({args.rows:,} rows), p50 | " + " | ".join(results) + " |")
        print("|---|" + "---|" * len(results))
        for case in next(iter(results.values())):
            print(f"| {case} | " + " | ".join(f"{r[case]:.2f} ms" for r in results.values()) + " |")
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    main()
