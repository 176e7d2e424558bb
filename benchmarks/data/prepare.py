"""Regenerate the public intent benchmarks' data under ``benchmarks/data/`` from the upstream repos.

Both upstream repositories are read with ``git show <commit>:<path>`` at the pinned commits
below, so a plain clone (or a bare mirror) of each is all it takes::

    git clone https://github.com/clinc/oos-eval
    git clone https://github.com/sonos/nlu-benchmark
    .venv/bin/python benchmarks/data/prepare.py --clinc oos-eval --snips nlu-benchmark
    .venv/bin/python benchmarks/data/prepare.py --clinc oos-eval --snips nlu-benchmark --check

``--check`` regenerates into a temporary folder and compares it byte for byte with the shipped
files (exit 1 on any difference). Every selection is a seeded shuffle per label
(``random.Random(f"{SEED}:{task}:{split}:{label}")``, Python's string seeding is SHA-512 based and
stable across versions and platforms), so one label's selection does not depend on the others.

CLINC150 (``data/data_full.json``, the paper's "Full" setting):

* ``train.jsonl``: per in-scope intent, its 100 upstream train utterances minus any whose
  normalized text (lower case, whitespace collapsed) also occurs in the upstream test or
  ``oos_test`` splits, shuffled; the first 32 are kept with ``rank`` 0..31, so "N per label" is
  ``rank < N`` and the 8/16/32 sets are nested. Plus the 100 upstream ``oos_train`` utterances,
  shuffled, ``rank`` 0..99 (the benchmark takes ``rank < round(N * 100 / 32)`` of them).
* ``test.jsonl``: per in-scope intent 8 of its 30 upstream test utterances (the first 8 of a
  seeded shuffle, 1,200 in all), plus 100 of the 1,000 ``oos_test`` utterances; ``rank`` is the
  position in the shuffle (a stratified subset takes the lowest ranks of each label).
* ``domains.json``: upstream ``data/domains.json`` (10 domains -> their 150 intents), unchanged
  in content and order.
* ``anchors.json``: the paper's Table 2 figures (transcribed from ``paper.pdf``, see ANCHORS.md).

SNIPS (``2017-06-custom-intent-engines``, the 7 custom intents):

* an utterance is the concatenation of its chunks' ``text``, whitespace collapsed and stripped;
  its slots are ``{entity: chunk text}`` (whitespace collapsed and stripped); the built-in
  ``snips/datetime`` entity name of the metrics files is ``timeRange`` in the data;
* ``train.jsonl``: per intent, ``train_<Intent>_full.json`` minus utterances that repeat a slot
  name (61 of 13,784 upstream, so a slot's value is always one string), minus duplicates
  (normalized text, the first kept) and minus any whose normalized text occurs in a
  ``validate_*.json`` file, shuffled; the first 32 are kept with ``rank`` 0..31;
* ``test.jsonl``: all of ``validate_<Intent>.json`` (100 per intent, 700; no utterance there
  repeats a slot name), ``rank`` = position in a seeded shuffle (for stratified subsets);
* ``slots.json``: per intent, the sorted slot names seen in its train_full and validate files;
* ``anchors.json``: the commercial engines' figures computed from the repo's ``*_metrics.json``
  files (see ``snips_anchors`` and ANCHORS.md).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import random
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
SEED = 25  # issue 25

CLINC_COMMIT = "828f8093932c8fe6ca7936c3d2e52903b1c523de"
CLINC_TRAIN_PER_INTENT = 32
CLINC_TEST_PER_INTENT = 8
CLINC_OOS_TEST = 100
OOS = "oos"

SNIPS_COMMIT = "b86ac7f1577868c42158d0dec77db50956046696"
SNIPS_DIR = "2017-06-custom-intent-engines"
SNIPS_INTENTS = (
    "AddToPlaylist",
    "BookRestaurant",
    "GetWeather",
    "PlayMusic",
    "RateBook",
    "SearchCreativeWork",
    "SearchScreeningEvent",
)
SNIPS_TRAIN_PER_INTENT = 32
# engine -> its metrics file name in each intent's folder; "Snips (full)" trained on ~2,000
SNIPS_ENGINES = {
    "Alexa": "Alexa_metrics.json",
    "api.ai (Dialogflow)": "api.ai_metrics.json",
    "Luis": "Luis_metrics.json",
    "Wit": "Wit_metrics.json",
    "Snips": "Snips_metrics.json",
    "Snips (full)": "Snips_metrics_full.json",
}
SLOT_ALIASES = {"snips/datetime": "timeRange"}

# Larson et al. 2019, Table 2 ("Full" and "Small" columns): in-scope accuracy and out-of-scope
# recall, in percent; oos-train = a 151st intent trained on the 100 oos_train utterances.
CLINC_PAPER_TABLE_2: dict[str, dict[str, dict[str, float]]] = {
    "oos-train": {
        "FastText": {"full": 89.0, "small": 84.5, "oos_full": 9.7, "oos_small": 23.2},
        "SVM": {"full": 91.0, "small": 89.6, "oos_full": 14.5, "oos_small": 18.6},
        "CNN": {"full": 91.2, "small": 88.9, "oos_full": 18.9, "oos_small": 22.2},
        "DialogFlow": {"full": 91.7, "small": 89.4, "oos_full": 14.0, "oos_small": 14.1},
        "Rasa": {"full": 91.5, "small": 88.9, "oos_full": 45.3, "oos_small": 55.0},
        "MLP": {"full": 93.5, "small": 91.5, "oos_full": 47.4, "oos_small": 52.2},
        "BERT": {"full": 96.9, "small": 96.4, "oos_full": 40.3, "oos_small": 40.9},
    },
    "oos-threshold": {
        "SVM": {"full": 88.2, "small": 85.6, "oos_full": 18.0, "oos_small": 13.0},
        "FastText": {"full": 88.6, "small": 84.8, "oos_full": 28.3, "oos_small": 6.0},
        "DialogFlow": {"full": 90.8, "small": 89.2, "oos_full": 26.7, "oos_small": 20.5},
        "Rasa": {"full": 90.9, "small": 89.6, "oos_full": 31.2, "oos_small": 1.0},
        "CNN": {"full": 90.9, "small": 88.9, "oos_full": 30.9, "oos_small": 25.5},
        "MLP": {"full": 93.4, "small": 91.3, "oos_full": 49.1, "oos_small": 32.4},
        "BERT": {"full": 96.2, "small": 96.2, "oos_full": 52.3, "oos_small": 58.9},
    },
}


def git_json(repo: Path, commit: str, path: str) -> Any:
    out = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, check=True
    ).stdout
    return json.loads(out)


def clean(text: str) -> str:
    return " ".join(text.split())


def norm(text: str) -> str:
    return clean(text).lower()


def shuffled(items: list[Any], *key: str) -> list[Any]:
    out = list(items)
    random.Random(":".join([str(SEED), *key])).shuffle(out)
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


# -- CLINC150 --------------------------------------------------------------------------------------


def prepare_clinc(repo: Path, out: Path) -> dict[str, int]:
    data = git_json(repo, CLINC_COMMIT, "data/data_full.json")
    domains: dict[str, list[str]] = git_json(repo, CLINC_COMMIT, "data/domains.json")
    intents = [i for names in domains.values() for i in names]
    by_label: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for split in ("train", "test", "oos_train", "oos_test"):
        for text, label in data[split]:
            by_label[split.removeprefix("oos_")][label].append(clean(text))
    if set(by_label["train"]) - {OOS} != set(intents) or len(intents) != 150:
        raise SystemExit("domains.json and data_full.json disagree on the 150 intents")
    held_out = {norm(t) for texts in by_label["test"].values() for t in texts}
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    dropped = 0
    for label in [*intents, OOS]:
        pool = [t for t in by_label["train"][label] if norm(t) not in held_out]
        dropped += len(by_label["train"][label]) - len(pool)
        keep = len(pool) if label == OOS else CLINC_TRAIN_PER_INTENT
        picked = shuffled(pool, "clinc150", "train", label)[:keep]
        train += [{"text": t, "intent": label, "rank": r} for r, t in enumerate(picked)]
        keep = CLINC_OOS_TEST if label == OOS else CLINC_TEST_PER_INTENT
        picked = shuffled(by_label["test"][label], "clinc150", "test", label)[:keep]
        test += [{"text": t, "intent": label, "rank": r} for r, t in enumerate(picked)]
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    write_json(out / "domains.json", domains)
    write_json(
        out / "anchors.json",
        {
            "source": "Larson et al., EMNLP 2019, Table 2 (paper.pdf at clinc/oos-eval "
            f"{CLINC_COMMIT[:7]}); 'full': 100 train utterances per intent, 'small': 50; "
            "in-scope accuracy and out-of-scope recall in percent",
            "table_2": CLINC_PAPER_TABLE_2,
        },
    )
    return {"train": len(train), "test": len(test), "train_dropped_as_test_duplicates": dropped}


# -- SNIPS -----------------------------------------------------------------------------------------


def snips_item(raw: dict[str, Any], intent: str) -> tuple[dict[str, Any], bool]:
    """``({"text", "intent", "slots"}, repeats_a_slot_name)`` of one upstream utterance."""
    chunks = raw["data"]
    text = clean("".join(c["text"] for c in chunks))
    names = [SLOT_ALIASES.get(c["entity"], c["entity"]) for c in chunks if "entity" in c]
    slots = {
        SLOT_ALIASES.get(c["entity"], c["entity"]): clean(c["text"])
        for c in chunks
        if "entity" in c
    }
    for value in slots.values():
        if value not in text:
            raise SystemExit(f"slot value {value!r} is not in {text!r}")
    return {"text": text, "intent": intent, "slots": slots}, len(set(names)) < len(names)


def prepare_snips(repo: Path, out: Path) -> dict[str, int]:
    validate: dict[str, list[dict[str, Any]]] = {}
    full: dict[str, list[tuple[dict[str, Any], bool]]] = {}
    for intent in SNIPS_INTENTS:
        raw = git_json(repo, SNIPS_COMMIT, f"{SNIPS_DIR}/{intent}/validate_{intent}.json")[intent]
        items = [snips_item(r, intent) for r in raw]
        if any(repeats for _, repeats in items):
            raise SystemExit(f"validate_{intent}.json repeats a slot name")
        validate[intent] = [item for item, _ in items]
        raw = git_json(repo, SNIPS_COMMIT, f"{SNIPS_DIR}/{intent}/train_{intent}_full.json")
        full[intent] = [snips_item(r, intent) for r in raw[intent]]
    held_out = {norm(item["text"]) for items in validate.values() for item in items}
    counts: Counter[str] = Counter()
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    slot_names: dict[str, list[str]] = {}
    for intent in SNIPS_INTENTS:
        seen: set[str] = set()
        pool = []
        for item, repeats in full[intent]:
            key = norm(item["text"])
            if repeats or key in held_out or key in seen or not key:
                counts["repeats" if repeats else "held_out" if key in held_out else "dup"] += 1
                continue
            seen.add(key)
            pool.append(item)
        picked = shuffled(pool, "snips", "train", intent)[:SNIPS_TRAIN_PER_INTENT]
        train += [{**item, "rank": r} for r, item in enumerate(picked)]
        order = shuffled(list(range(len(validate[intent]))), "snips", "test", intent)
        rank = {index: r for r, index in enumerate(order)}
        test += [{**item, "rank": rank[i]} for i, item in enumerate(validate[intent])]
        names = {n for item, _ in full[intent] for n in item["slots"]}
        names |= {n for item in validate[intent] for n in item["slots"]}
        slot_names[intent] = sorted(names)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    write_json(out / "slots.json", slot_names)
    write_json(out / "anchors.json", snips_anchors(repo, validate))
    return {
        "train": len(train),
        "test": len(test),
        "train_full_repeating_a_slot": counts["repeats"],
        "train_full_duplicates": counts["dup"],
        "train_full_in_validate": counts["held_out"],
    }


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _engine_size(
    metrics: dict[str, Any], intent: str, gold: Counter[str], size: str
) -> dict[str, float]:
    """One engine, one intent, one training size: the mean over its runs of macro slot F1
    (each slot's F1, averaged over the intent's slots), and the summed counts for micro figures
    (true positives exactly, from recall x gold; predictions from TP / precision where precision
    is above 0; where it is 0 the number of wrong predictions is unknown and counted as 1, so
    micro precision is an upper bound)."""
    per_intent = metrics["intents"][intent]
    slots = {SLOT_ALIASES.get(s, s): v for s, v in per_intent["slots"].items()}
    runs = len(per_intent["recall"][size])
    macro, tp, pred, gold_n, unknown = [], 0.0, 0.0, 0.0, 0
    for run in range(runs):
        f1s = []
        for name, v in slots.items():
            r = float(v["recall"][size][run])
            p = float(v["precision"][size][run])
            true_pos = r * gold[name]
            if math.isnan(p):  # no prediction of this slot at all
                p, n_pred = 0.0, 0.0
            elif p == 0:
                n_pred, unknown = 1.0, unknown + 1
            else:
                n_pred = true_pos / p
            f1s.append(_f1(p, r))
            tp, pred, gold_n = tp + true_pos, pred + n_pred, gold_n + gold[name]
        macro.append(sum(f1s) / len(f1s))
    intent_recall = [float(x) for x in per_intent["recall"][size]]
    precision = [float(x) for x in per_intent["precision"][size]]
    scored = not all(math.isnan(x) for x in precision)  # Wit's files score no intent at all
    return {
        "macro_slot_f1": sum(macro) / runs,
        "tp": tp / runs,
        "pred": pred / runs,
        "gold": gold_n / runs,
        "zero_precision_slots": unknown,
        "intent_recall": sum(intent_recall) / runs if scored else math.nan,
    }


def snips_anchors(repo: Path, validate: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per engine and training size (utterances per intent): slot F1 averaged over the 7 intents
    (macro: per slot, then per intent), micro slot P/R/F1 over every slot occurrence of the 700
    validation utterances, and the per-intent engines' intent recall (not a 7-way accuracy)."""
    engines: dict[str, dict[str, Any]] = {}
    for engine, file_name in SNIPS_ENGINES.items():
        sizes: dict[str, list[dict[str, float]]] = defaultdict(list)
        for intent in SNIPS_INTENTS:
            gold = Counter(n for item in validate[intent] for n in item["slots"])
            metrics = git_json(repo, SNIPS_COMMIT, f"{SNIPS_DIR}/{intent}/{file_name}")
            for size in metrics["training_sizes"]:
                # the full runs trained on 1,942-2,000 utterances, as many as train_full has
                key = "full" if file_name == SNIPS_ENGINES["Snips (full)"] else str(size)
                sizes[key].append(_engine_size(metrics, intent, gold, str(size)))
        engines[engine] = {}
        for size, rows in sizes.items():
            tp, pred, gold_n = (sum(r[k] for r in rows) for k in ("tp", "pred", "gold"))
            p, r = (tp / pred if pred else 0.0), tp / gold_n
            engines[engine][size] = {
                "intents": len(rows),
                "macro_slot_f1": round(100 * sum(x["macro_slot_f1"] for x in rows) / len(rows), 1),
                "micro_slot_precision_upper_bound": round(100 * p, 1),
                "micro_slot_recall": round(100 * r, 1),
                "micro_slot_f1_upper_bound": round(100 * _f1(p, r), 1),
                "zero_precision_slot_runs": sum(int(x["zero_precision_slots"]) for x in rows),
                "intent_recall": None
                if any(math.isnan(x["intent_recall"]) for x in rows)
                else round(100 * sum(x["intent_recall"] for x in rows) / len(rows), 1),
            }
    return {
        "source": f"sonos/nlu-benchmark {SNIPS_COMMIT[:7]}, {SNIPS_DIR}/<Intent>/<engine>_metrics"
        ".json (June 2017; each intent trained and scored on its own; 3 random training draws "
        "per size, averaged); figures in percent",
        "engines": engines,
    }


# -- main ------------------------------------------------------------------------------------------


def prepare(clinc: Path, snips: Path, out: Path) -> dict[str, dict[str, int]]:
    return {
        "clinc150": prepare_clinc(clinc, out / "clinc150"),
        "snips": prepare_snips(snips, out / "snips"),
    }


def differences(shipped: Path, fresh: Path) -> list[str]:
    diffs = []
    for path in sorted(fresh.rglob("*")):
        if path.is_file():
            rel = path.relative_to(fresh)
            other = shipped / rel
            if not other.is_file() or not filecmp.cmp(path, other, shallow=False):
                diffs.append(str(rel))
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clinc", type=Path, required=True, help="a clone of clinc/oos-eval")
    parser.add_argument("--snips", type=Path, required=True, help="a clone of sonos/nlu-benchmark")
    parser.add_argument("--check", action="store_true", help="compare with the shipped files")
    args = parser.parse_args()
    if not args.check:
        print(json.dumps(prepare(args.clinc, args.snips, HERE), indent=1))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args.clinc, args.snips, Path(tmp))
        diffs = differences(HERE, Path(tmp))
    print("identical" if not diffs else f"differ: {', '.join(diffs)}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
