"""The dataset page's "Synthesize" form and a version's synthesis report, over HTTP against a
live gateway whose teacher is the fake ``synth-teacher`` (SQLite and PostgreSQL), one run of the
form in Chromium, and the report's cap on rejected rows rendered from a made-up report."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from distillery.web.contexts import DatasetLine, DatasetPage, Layout
from distillery.web.datasets import REJECTED_SHOWN, synthesis_report
from distillery.web.render import environment
from tests.support.fakes.openai_server import FakeOpenAI
from tests.support.fakes.teacher import RESPONSE_FORMAT
from tests.support.stored import completion, insert

SEEDS = {
    "billing": [
        "My invoice shows a charge I do not recognise.",
        "Why was I billed twice this month?",
        "Can I get a copy of last year's invoice?",
        "The invoice total does not match my plan.",
        "How do I change the card my invoice is charged to?",
        "請求書の金額が契約と違います。",
        "今月の請求書が二通届きました。",
        "請求書の宛名を会社名に変えたいです。",
        "先月分の請求書を再発行してください。",
        "請求書の支払い期限を延ばせますか。",
    ],
    "technical": [
        "The app shows an error message when I log in.",
        "I get an error message every time I upload a photo.",
        "Sync fails with an error message after the update.",
        "An error message appears when I open settings.",
        "The export button gives me an error message.",
        "ログインするとエラーが表示されます。",
        "写真をアップロードするとエラーになります。",
        "更新後に同期でエラーが出ます。",
        "設定を開くとエラーが出て閉じます。",
        "書き出しボタンを押すとエラーになります。",
    ],
}
DESCRIPTION = "問い合わせを請求チームか技術サポートに振り分ける。Route each inquiry."
MISTAKE_JA = "これは日本語の入力です。"  # the fake teacher's wrong-language input in English cells


def _dataset(gateway: Any) -> str:
    """A dataset of 20 captured seeds (English and Japanese, two labels): its id."""
    records = []
    for label, questions in SEEDS.items():
        for q in questions:
            answer = orjson.dumps({"reason": "seed", "category": label}).decode()
            c = completion(q, answer, metadata={"prompt": "router"}, system="Route the inquiry.")
            records.append(replace(c, request={**c.request, "response_format": RESPONSE_FORMAT}))
    insert(gateway.services, *records)
    r = httpx.post(
        gateway.url + "/v1/distillery/datasets",
        json={
            "name": "router 振り分け",
            "source": {"metadata": {"prompt": "router"}},
            "split": {"train": 0.8, "validation": 0.1, "test": 0.1},
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _form(**fields: Any) -> dict[str, Any]:
    return {
        "teacher": "synth-teacher",
        "description": DESCRIPTION,
        "n": "8",
        "inputs_per_call": "8",  # above the fake teacher's 4 mistakes a batch
        "languages": ["en", "ja"],
        "labels": "",
        "max_usd": "",
        "max_calls": "",
        "version": "1",
        "action": "estimate",
        **fields,
    }


def _post(gateway: Any, dataset_id: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/datasets/{dataset_id}/synthesize",
        data=_form(**fields),
        timeout=300,
        follow_redirects=False,
    )


def _latest(gateway: Any, dataset_id: str) -> int | None:
    latest: int | None = gateway.services.datasets.get(dataset_id).latest_version
    return latest


def test_the_estimate_is_shown_on_the_page_and_nothing_runs(
    gateway: Any, fake_openai: FakeOpenAI
) -> None:
    dataset_id = _dataset(gateway)
    page = httpx.get(f"{gateway.url}/datasets/{dataset_id}", timeout=30)
    assert page.status_code == 200
    for text in ("Synthesize", "Estimate", 'name="teacher"', '<option value="synth-teacher">'):
        assert text in page.text
    assert "Synthesis report" not in page.text
    assert "captured" in page.text  # the splits' origins and the examples' origin

    before = len(fake_openai.requests)
    r = _post(gateway, dataset_id, labels="billing, technical")
    assert r.status_code == 200, r.text[:2000]
    html = r.text
    assert "Estimate for 8 row(s) from synth-teacher" in html
    assert "no price for synth-teacher" in html  # the fake teacher has no price
    assert "billing, technical" in html and "<code>category</code>" in html
    # the form keeps what was typed, Japanese included
    assert DESCRIPTION in html and 'value="ja" checked' in html and 'value="8"' in html
    assert len(fake_openai.requests) == before and _latest(gateway, dataset_id) == 1


def test_synthesize_opens_the_new_version_with_its_report(gateway: Any) -> None:
    dataset_id = _dataset(gateway)
    r = _post(gateway, dataset_id, action="synthesize")
    assert r.status_code == 303, r.text[:2000]
    location = r.headers["location"]
    assert location == f"/datasets/{dataset_id}?version=2"
    assert _latest(gateway, dataset_id) == 2

    with httpx.Client(base_url=gateway.url, timeout=30, cookies=r.cookies) as browser:
        html = browser.get(location).text
    assert "Synthesized 8 of 8 rows with synth-teacher: version 2." in html  # the flash
    assert "Synthesis report" in html and "8 / 8" in html
    assert "complete: every cell filled" in html
    report = gateway.services.datasets.get_version(dataset_id, 2).stats["synthesis"]
    assert report["id"] in html
    assert {"duplicate_of_seed", "language_mismatch"} <= set(report["reasons"])
    reasons = html.split('class="grid synth-reasons"')[1].split("</table>")[0]
    for reason, count in report["reasons"].items():
        assert f'<td class="mono">{reason}</td><td class="num">{count}</td>' in reasons
    # the cells: two labels by two languages, two rows each
    cells = html.split('class="grid synth-cells"')[1].split("</table>")[0]
    assert cells.count("<tr>") == 5 and cells.count('<td class="num">2</td>') == 8
    # rejected rows: Japanese text as is, marked for Japanese glyphs, and the teacher's answer
    rejected = html.split('class="grid synth-rejected"')[1].split("</table>")[0]
    assert rejected.count("<tr>") == 1 + report["rejected"]
    assert f'lang="ja">{MISTAKE_JA}</td>' in rejected
    assert "exact (1.000) of: " in rejected  # the detail of a duplicate of a seed
    # where the rows came from, per split
    splits = html.split('class="grid splits"')[1].split("</table>")[0]
    assert 'origin-synthetic" title="rows that are synthetic">synthetic</th>' in splits
    assert '<td class="num origin-synthetic">8</td>' in splits

    # the examples are listed 20 at a time, each with its origin: the synthetic rows come last
    assert html.count('class="origin origin-captured"') == 20
    nxt = html.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    more = httpx.get(gateway.url + nxt, timeout=30).text
    assert more.count('class="origin origin-synthetic"') == 8

    # the seed version has no report
    v1 = httpx.get(f"{gateway.url}/datasets/{dataset_id}", params={"version": 1}).text
    assert "Synthesis report" not in v1 and "origin-synthetic" not in v1


def test_a_refused_request_is_said_on_the_page_and_makes_nothing(
    gateway: Any, fake_openai: FakeOpenAI
) -> None:
    dataset_id = _dataset(gateway)
    before = len(fake_openai.requests)

    unknown = _post(gateway, dataset_id, teacher="no-such-model", action="synthesize")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("text/html")
    assert "The model `no-such-model` does not exist" in unknown.text
    assert 'class="error-message synth-error" role="alert"' in unknown.text
    assert DESCRIPTION in unknown.text and 'value="no-such-model"' in unknown.text  # kept

    for fields, status, said in (
        ({"max_usd": "1.5"}, 400, "max_usd needs a price for &#39;synth-teacher&#39;"),
        ({"n": "many"}, 400, "(n)"),
        ({"n": "100000"}, 400, "(n)"),
        ({"description": ""}, 400, "(description)"),
        ({"languages": ["fr"]}, 400, "(coverage.languages[0])"),
    ):
        r = _post(gateway, dataset_id, action="synthesize", **fields)
        assert r.status_code == status, (fields, r.text[:2000])
        assert said in r.text.split('role="alert">')[1].split("</p>")[0], fields

    missing = _post(gateway, "no-such-dataset", action="synthesize")
    assert missing.status_code == 404 and "no-such-dataset" in missing.text

    cross = httpx.post(
        f"{gateway.url}/datasets/{dataset_id}/synthesize",
        data=_form(action="synthesize"),
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403 and "Cross-site" in cross.text

    assert len(fake_openai.requests) == before and _latest(gateway, dataset_id) == 1


def test_the_report_shows_the_first_rejected_rows_and_counts_the_rest() -> None:
    rejected = [
        {"reason": "duplicate", "input": f"質問 {i}", "label": "billing", "language": "ja"}
        for i in range(REJECTED_SHOWN + 50)
    ] + [{"reason": "unparsable_inputs", "raw": "<b>prose</b>", "detail": "no JSON"}]
    report = synthesis_report(
        {
            "id": "synth_x",
            "teacher": "t",
            "requested": 10,
            "accepted": 3,
            "rejected": len(rejected),
            "stopped": "max_calls",
            "reasons": {"duplicate": REJECTED_SHOWN + 50, "unparsable_inputs": 1},
            "cells": [{"label": "billing", "language": "ja", "target": 10, "accepted": 3}],
            "spent": {"calls": 6, "prompt_tokens": 100, "completion_tokens": 50, "usd": None},
            "rejected_items": rejected,
        }
    )
    assert len(report.rejected_items) == REJECTED_SHOWN and report.rejected_total == 251
    line = DatasetLine(id="ds_1", name="d", created_at=0, description=None, latest_version=2)
    page = DatasetPage(
        dataset=line,
        versions=[],
        version=2,
        version_id="dsv_1",
        spec={},
        splits=[],
        examples=0,
        tokens=0,
        tokenizer=None,
        corrected=0,
        invalid=0,
        cost={},
        duplicates_mode=None,
        duplicates_found=0,
        duplicates_removed=0,
        duplicates=[],
        warnings=[],
        sample=[],
        synthesis=report,
    )
    layout = Layout(title="d", nav=[], auth=False, flash=None, path="/datasets/ds_1")
    html = environment().get_template("dataset.html").render(layout=layout, page=page)
    assert f"(first {REJECTED_SHOWN} of 251)" in html and "51 more rejected row(s)" in html
    assert "質問 199" in html and "質問 200" not in html
    assert "stopped at the call cap (max calls)" in html and "no price" in html
    assert "&lt;b&gt;prose" not in html  # the raw answer is past the first 200


@pytest.mark.browser
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the SQL runs on both above
def test_the_form_in_chromium(gateway: Any, page: Any) -> None:
    """Fill the form, estimate, then synthesize: the browser lands on the new version."""
    dataset_id = _dataset(gateway)
    page.goto(f"{gateway.url}/datasets/{dataset_id}")
    form = page.locator("form.synthesize-form")
    form.get_by_label("Teacher", exact=True).fill("synth-teacher")
    form.get_by_label("Description of the task").fill(DESCRIPTION)
    form.get_by_label("Rows (n)").fill("8")
    form.get_by_label("Inputs per call").fill("8")
    form.get_by_label("English").check()
    form.get_by_label("日本語").check()
    form.get_by_role("button", name="Estimate").click()
    page.locator(".synth-estimate").wait_for()
    assert "Estimate for 8 row(s)" in page.locator(".synth-estimate").inner_text()
    assert page.locator("form.synthesize-form").get_by_label("日本語").is_checked()

    # the synthesis runs in the request: the click waits for the answer
    page.locator("form.synthesize-form").get_by_role("button", name="Synthesize").click(
        timeout=180_000
    )
    page.wait_for_url("**/datasets/*?version=2", timeout=120_000)
    assert "Synthesized 8 of 8 rows" in page.locator(".flash").inner_text()
    assert page.locator("dd.synth-accepted").inner_text() == "8 / 8"
    reasons = page.locator("table.synth-reasons").inner_text()
    assert "duplicate_of_seed" in reasons and "language_mismatch" in reasons
    cell = page.locator("table.synth-rejected td[lang=ja]", has_text=MISTAKE_JA).first
    assert cell.inner_text() == MISTAKE_JA
    assert page.evaluate("document.characterSet") == "UTF-8"
    assert page.dialogs == []
