"""A deterministic teacher for synthesis and relabelling tests (test code only).

``synth-*`` models of the fake OpenAI server answer three kinds of request:

- a topic plan (``response_format`` schema named ``distillery_topics``): three topics;
- new inputs (``distillery_inputs``): the number asked for, in the language asked for, about
  the label asked for (its keyword: ``invoice``/``請求書`` for ``billing``, ``error message``/
  ``エラー`` for ``technical``), varied with words drawn from a seeded generator. Each batch also
  holds the mistakes the checks must catch: a verbatim copy of the first example shown
  (``duplicate_of_seed``), the same with its punctuation changed (a near-duplicate), one input
  in the other language (``language_mismatch``) and, for ``billing``, one about a refund, a
  label outside the allowed set (``label_not_allowed``);
- a production request (anything else): ``{"reason", "category"}`` where the category is read
  from the input's keywords; an input holding ``garbled`` gets prose, not JSON (``invalid_json``).

``synth-garbage`` answers prose to every plan and input request (unparsable, retried once).
``synth-strong`` is a second teacher for relabelling: it files ``invoice`` questions that also
mention ``crash`` under ``technical`` where ``synth-teacher`` says ``billing``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from typing import Any

import orjson

# the task the fake teacher answers: route an inquiry, as {"reason", "category"}
SCHEMA = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "category": {"type": "string", "enum": ["billing", "technical"]},
    },
    "required": ["reason", "category"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "route", "strict": True, "schema": SCHEMA},
}
KEYWORDS = {
    "billing": ("invoice", "請求書"),
    "technical": ("error message", "エラー"),
    "refunds": ("refund", "返金"),
}
EN_WORDS = [
    "apple",
    "river",
    "window",
    "garden",
    "ticket",
    "laptop",
    "camera",
    "bridge",
    "pencil",
    "rocket",
    "violin",
    "castle",
    "harbor",
    "jacket",
    "lantern",
    "meadow",
    "orchid",
    "planet",
    "saddle",
    "tunnel",
    "umbrella",
    "wallet",
    "yacht",
    "anchor",
    "basket",
    "candle",
    "desert",
    "engine",
    "forest",
    "glacier",
    "hammer",
    "island",
    "jungle",
    "kettle",
    "ladder",
    "magnet",
    "needle",
    "oyster",
    "parrot",
    "quartz",
]
EN_TEMPLATES = (
    "Why does the {k} for my {a} mention a {b}? I only bought a {c}.",
    "I got an {k} about the {a} while ordering a {b} and a {c}, what now?",
    "Can you explain the {k} I received after returning the {a}? The {b} was fine.",
    "Hello, the {k} lists a {a} and a {b}, but my account shows a {c}.",
    "Please help: another {k} arrived for the {a}, right after the {b} trip.",
)
JA_WORDS = [
    "料金",
    "契約",
    "会員",
    "住所",
    "配送",
    "注文",
    "在庫",
    "画面",
    "設定",
    "電話",
    "写真",
    "音楽",
    "地図",
    "天気",
    "学校",
    "病院",
    "銀行",
    "駅",
    "空港",
    "映画",
    "旅行",
    "料理",
    "野菜",
    "果物",
    "新聞",
    "雑誌",
    "辞書",
    "時計",
    "眼鏡",
    "帽子",
    "机",
    "椅子",
    "庭",
    "森",
    "山",
    "海",
    "川",
    "島",
]
JA_TEMPLATES = (
    "{k}について質問です。{a}と{b}はどうなりますか",
    "昨日から{a}の{k}が届きます。{b}も確認しました",
    "{a}を{b}で申し込みましたが、{k}の内容が分かりません",
    "{a}の件で{k}が来ましたが、{b}の返事がありません",
    "なぜ{k}に{a}と{b}が書かれているのですか",
)
_seen: Counter[str] = Counter()  # how many times a prompt was asked (batches differ)


def is_synthesis_request(body: dict[str, Any]) -> bool:
    return str(body.get("model", "")).startswith("synth-")


def _schema_name(body: dict[str, Any]) -> str | None:
    rf = body.get("response_format") or {}
    js = rf.get("json_schema") if isinstance(rf, dict) else None
    return js.get("name") if isinstance(js, dict) else None


def _prompt(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


def answer(body: dict[str, Any]) -> str:
    model = str(body.get("model"))
    kind = _schema_name(body)
    if kind in ("distillery_topics", "distillery_inputs") and model == "synth-garbage":
        return "Here are some ideas, in prose rather than JSON."
    if kind == "distillery_topics":
        return orjson.dumps({"topics": ["orders", "accounts", "deliveries"]}).decode()
    if kind == "distillery_inputs":
        return orjson.dumps({"inputs": inputs(_prompt(body))}).decode()
    return label_answer(model, _last_user(body))


def _last_user(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            return str(m.get("content"))
    return ""


def inputs(prompt: str) -> list[str]:
    count = int(m.group(1)) if (m := re.search(r"Write (\d+) new user inputs", prompt)) else 5
    japanese = "in Japanese" in prompt
    found = re.search(r'= "([^"]+)"', prompt)
    label = found.group(1) if found else "billing"
    topic = re.search(r"about: ([^,.]+)", prompt)
    examples = re.findall(r"^- (.+)$", prompt.split("Examples of real inputs:")[-1], re.M)
    _seen[prompt] += 1
    key = f"{prompt}#{_seen[prompt]}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    keyword = KEYWORDS.get(label, (label, label))[1 if japanese else 0]
    out = []
    for _ in range(count):
        if japanese:
            a, b = rng.sample(JA_WORDS, 2)
            text = rng.choice(JA_TEMPLATES).format(k=keyword, a=a, b=b)
        else:
            a, b, c = rng.sample(EN_WORDS, 3)
            text = rng.choice(EN_TEMPLATES).format(k=keyword, a=a, b=b, c=c)
        if topic is not None:
            text += f" ({topic.group(1).strip()})"
        out.append(text)
    mistakes = []
    if examples:
        mistakes += [examples[0], examples[0].rstrip("?？.。") + "!!"]
    mistakes.append(
        "This one is written in English by mistake." if japanese else "これは日本語の入力です。"
    )
    if label == "billing":
        mistakes.append("返金はいつ届きますか？" if japanese else "When will my refund arrive?")
    return mistakes + out[: max(0, count - len(mistakes))]


def label_answer(model: str, text: str) -> str:
    if "garbled" in text:
        return "I think this is about billing, probably."
    category = "technical"
    for label, words in KEYWORDS.items():
        if any(w in text for w in words):
            category = label
            break
    if model == "synth-strong" and "crash" in text:
        category = "technical"
    return orjson.dumps({"reason": f"it mentions {category}", "category": category}).decode()
