"""The dashboard in real Chromium against a live gateway: capture through the openai SDK, then
filter, open, and check that Japanese renders and user content stays inert text."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.browser

XSS = "<script>alert(1)</script>"
JA_QUESTION = "有給休暇の申請方法を教えてください。"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Browser tests run on SQLite only (the pages' SQL runs on both in test_pages.py)."""
    return f"sqlite:///{tmp_path / 'distillery.db'}"


def _capture(client: openai.OpenAI) -> dict[str, str]:
    sent = {
        "en": ("How do I reset my password?", {"prompt": "support", "lang": "en"}),
        "ja": (JA_QUESTION, {"prompt": "support", "lang": "ja"}),
        "xss": (f"Say {XSS} please", {"prompt": "xss", "note": XSS}),
        "other": ("route me", {"prompt": "router"}),
    }
    ids = {}
    for name, (text, metadata) in sent.items():
        resp = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": text}],
            store=True,
            metadata=metadata,
        )
        ids[name] = resp.id
    return ids


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_completions_filter_detail_japanese_and_escaping(
    client: openai.OpenAI, gateway: Any, page: Any, tmp_path: Path
) -> None:
    ids = _capture(client)

    page.goto(gateway.url + "/completions")
    assert page.evaluate("document.characterSet") == "UTF-8"
    assert page.locator("tbody tr[data-id]").count() == 4

    # filter by metadata through the form
    page.locator('form.filters input[name="meta"]').last.fill("prompt=support")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/completions?*meta=prompt%3Dsupport*")
    rows = page.locator("tbody tr[data-id]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(
        [ids["en"], ids["ja"]]
    )
    assert JA_QUESTION in page.locator("table.completions").inner_text()

    # the detail page of the Japanese completion
    page.locator(f'tr[data-id="{ids["ja"]}"] a').first.click()
    page.wait_for_url(f"**/completions/{ids['ja']}")
    user_text = page.locator(".message.role-user .text")
    assert user_text.inner_text() == JA_QUESTION
    assert user_text.get_attribute("lang") == "ja"
    assert page.locator(".message.role-assistant .text").inner_text() == f"echo: {JA_QUESTION}"
    main = page.locator("main").inner_text()
    assert "lang" in main and "support" in main
    # the glyphs are laid out (a non-zero box), not dropped
    box = user_text.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 5

    # user content with markup: shown as text, never run
    page.goto(gateway.url + "/completions?meta=prompt%3Dxss")
    assert XSS in page.locator("table.completions").inner_text()  # message preview and metadata
    assert page.locator("tbody tr[data-id] .tag").filter(has_text=XSS).count() == 1
    page.goto(gateway.url + f"/completions/{ids['xss']}")
    assert page.locator(".message.role-user .text").inner_text() == f"Say {XSS} please"
    assert XSS in page.locator("table.kv").first.inner_text()
    assert page.locator("main script").count() == 0
    assert page.dialogs == []

    shot = tmp_path / "completion.png"
    page.screenshot(path=str(shot), full_page=True)
    width, height = _png_size(shot)
    assert width >= 800 and height >= 400
    assert shot.stat().st_size > 10_000


def test_overview_and_models_pages(client: openai.OpenAI, gateway: Any, page: Any) -> None:
    _capture(client)
    page.goto(gateway.url + "/")
    assert page.locator("h1").inner_text() == "Overview"
    stat = page.locator("a.stat", has_text="Stored completions")
    assert stat.locator(".value").inner_text() == "4"
    assert "gpt-4o" in page.locator("main").inner_text()
    assert page.locator(".total-spend").inner_text().startswith("$")
    assert page.dialogs == []

    page.get_by_role("link", name="Models", exact=True).click()
    page.wait_for_url("**/models")
    text = page.locator("main").inner_text()
    assert "gpt-4o" in text and "echo-1" in text and "azure-gpt" in text


def test_select_all_and_pagination_links(gateway: Any, page: Any) -> None:
    from distillery.store.records import NewCompletion

    gateway.services.completions.insert_many(
        [
            NewCompletion(
                id=f"chatcmpl-page{i:03d}",
                created_at=1_700_000_000 + i,
                model="echo-1",
                provider="fake",
                status="completed",
                stream=False,
                request={"model": "echo-1", "messages": [{"role": "user", "content": f"q{i}"}]},
                response=None,
                error=None,
                metadata={"batch": "p"},
            )
            for i in range(25)
        ]
    )
    page.goto(gateway.url + "/completions?limit=10")
    first = page.locator("tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert first[0] == "chatcmpl-page024" and len(first) == 10
    page.get_by_role("link", name="Older →").click()
    page.get_by_role("link", name="Older →").click()
    third = page.locator("tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert third == [f"chatcmpl-page{i:03d}" for i in range(4, -1, -1)]
    assert page.locator(".pager .disabled", has_text="Older").count() == 1
    page.get_by_role("link", name="← Newer").click()
    second = page.locator("tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert second == [f"chatcmpl-page{i:03d}" for i in range(14, 4, -1)]
    # the select-all box (progressive enhancement) checks every row
    page.locator("input.select-all").check()
    assert page.locator('tbody input[name="ids"]:checked').count() == 10


def test_selection_actions_distill_add_annotate_evaluate(
    client: openai.OpenAI, gateway: Any, page: Any
) -> None:
    from .seed import CONTAINS_ECHO

    ids = _capture(client)
    ev = client.evals.create(
        name="quick check",
        data_source_config={"type": "logs"},
        testing_criteria=[CONTAINS_ECHO],  # type: ignore[list-item]
    )

    def select(meta: str, *names: str) -> None:
        page.goto(gateway.url + f"/completions?meta={meta}")
        for name in names:
            page.locator(f'input[name="ids"][value="{ids[name]}"]').check()

    # Distill: a new dataset from two rows
    select("prompt%3Dsupport", "en", "ja")
    page.locator('input[name="dataset_name"]').fill("サポート <v1>")
    page.get_by_role("button", name="Distill").click()
    page.wait_for_url("**/datasets/*?version=1")
    assert "Created dataset サポート <v1>" in page.locator(".flash").inner_text()
    assert page.locator("h1").inner_text().startswith("サポート <v1>")
    assert page.locator("dd.examples").inner_text() == "2"

    # Add to dataset: its next version holds the earlier rows and the new one
    select("prompt%3Dxss", "xss")
    page.locator('select[name="dataset_id"]').select_option(label="サポート <v1> (v1)")
    page.get_by_role("button", name="Add to dataset").click()
    page.wait_for_url("**/datasets/*?version=2")
    assert page.locator("dd.examples").inner_text() == "3"
    assert page.locator("table.grid", has_text="Version").locator("tbody tr").count() == 2

    # Annotate: a review queue of the selection
    select("prompt%3Dsupport", "en", "ja")
    page.locator('input[name="queue_name"]').fill("check 確認")
    page.get_by_role("button", name="Annotate").click()
    page.wait_for_url("**/annotations/aq_*")
    assert page.locator("h1").inner_text() == "check 確認"
    assert page.locator("tbody tr[data-id]").count() == 2

    # Evaluate: an eval run over exactly the selection, started in the server
    select("prompt%3Dsupport", "ja")
    page.locator('select[name="eval_id"]').select_option(label="quick check")
    page.get_by_role("button", name="Evaluate").click()
    page.wait_for_url(f"**/evals/{ev.id}/runs/*")
    run_id = page.url.rsplit("/", 1)[1]
    for _ in range(100):
        if client.evals.runs.retrieve(run_id, eval_id=ev.id).status == "completed":
            break
        page.wait_for_timeout(100)
    page.reload()
    assert page.locator("dd .status").first.inner_text() == "completed"
    assert page.locator("dd.pass-rate").inner_text() == "100.0%"
    assert client.evals.runs.retrieve(run_id, eval_id=ev.id).result_counts.total == 1

    # without a selection nothing happens, and the page says so
    page.goto(gateway.url + "/completions")
    page.get_by_role("button", name="Annotate").click()
    assert "Select at least one completion" in page.locator(".flash").inner_text()
    assert page.dialogs == []


def test_annotation_review_claim_correct_accept_and_conflict(
    client: openai.OpenAI, gateway: Any, page: Any
) -> None:
    from .seed import JA_CORRECTION

    ids = _capture(client)
    svc = gateway.services.annotations
    queue = svc.create_queue(
        {
            "name": "レビュー",
            "source": {"type": "completions", "completion_ids": [ids["ja"], ids["xss"]]},
            "priority": "oldest",
        }
    )
    page.goto(gateway.url + "/annotations")
    page.get_by_role("link", name="レビュー").click()
    page.locator('input[name="reviewer"]').fill("さくら")
    page.get_by_role("button", name="Claim next item").click()
    page.wait_for_url(f"**/annotations/{queue.id}/items/*")
    assert page.locator(".message.role-user .text").inner_text() == JA_QUESTION
    assert page.locator(".original-output").inner_text() == f"echo: {JA_QUESTION}"
    assert page.locator("textarea[name=corrected_output]").input_value() == f"echo: {JA_QUESTION}"
    first = page.url.rsplit("/", 1)[1]

    page.locator("textarea[name=corrected_output]").fill(JA_CORRECTION + "\n2行目")
    page.locator('input[name="rating"][value="4"]').check()
    page.locator('input[name="tags"]').fill("tone, 丁寧")
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(f"**/annotations/{queue.id}/items/*")
    assert "Accepted" in page.locator(".flash").inner_text()
    second = page.url.rsplit("/", 1)[1]
    assert second != first
    done = svc.get_item(queue.id, first)
    assert done.status == "accepted" and done.rating == 4 and done.claimed_by == "さくら"
    assert done.corrected_output == JA_CORRECTION + "\n2行目"
    assert done.tags == ["tone", "丁寧"]

    # the second item (markup in the message) is shown as text; someone else edits it meanwhile
    assert page.locator(".message.role-user .text").inner_text() == f"Say {XSS} please"
    item = svc.get_item(queue.id, second)
    svc.submit(queue.id, second, {"version": item.version, "comment": "from the API"})
    page.locator("textarea[name=corrected_output]").fill("my correction")
    page.get_by_role("button", name="Accept").click()
    conflict = page.locator(".conflict")
    assert "changed by someone else" in conflict.inner_text()
    assert page.locator("textarea[name=corrected_output]").input_value() == "my correction"
    assert svc.get_item(queue.id, second).status == "claimed"
    page.get_by_role("button", name="Accept").click()  # submit again: now based on the latest
    page.wait_for_url(f"**/annotations/{queue.id}")
    assert "Nothing left to review" in page.locator(".flash").inner_text()
    assert svc.get_item(queue.id, second).corrected_output == "my correction"
    assert page.dialogs == []


def test_compare_page_table_and_chart(client: openai.OpenAI, gateway: Any, page: Any) -> None:
    from .seed import capture, eval_with_runs

    capture(client)
    eval_id, run_ids = eval_with_runs(client)
    page.goto(gateway.url + "/evals")
    for run_id in run_ids:
        page.locator(f'input[name="run_ids"][value="{run_id}"]').check()
    page.locator(f'input[name="baseline"][value="{run_ids[0]}"]').check()
    page.get_by_role("button", name="Compare selected runs").click()
    page.wait_for_url("**/evals/compare?*")
    table = page.locator("table.compare")
    assert (
        table.locator('tr[data-criterion="mentions echo"] td')
        .all_inner_texts()[0]
        .startswith("100.0%")
    )
    assert "baseline" in table.locator("thead th").nth(1).inner_text()
    chart = page.locator("figure.chart svg")
    assert chart.get_attribute("role") == "img"
    assert chart.locator("title").first.text_content() == "Pass rate per criterion"
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300
    assert chart.locator("g.bars rect").count() == 6
    assert eval_id


def test_the_costs_page_distils_a_prompt(client: openai.OpenAI, gateway: Any, page: Any) -> None:
    """The "Distil" button: too little traffic is said on the costs page; with enough, the
    distillation's page follows the server's run to its report (the fake provider's ``json-1``
    is the student, trained through its fine-tuning API)."""
    for i in range(30):
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"{i}: {JA_QUESTION if i % 2 else 'VPN?'}"}],
            store=True,
            metadata={"prompt": "helpdesk"},
        )
        if i == 3:  # four requests so far: too few
            page.goto(gateway.url + "/costs")
            row = page.locator("tr", has_text="helpdesk")
            row.get_by_label("Student for helpdesk").fill("json-1")
            row.get_by_role("button", name="Distil helpdesk").click()
            page.wait_for_url("**/costs")
            assert "has 4 usable example(s)" in page.locator("main").inner_text()
    page.goto(gateway.url + "/costs")
    row = page.locator("tr", has_text="helpdesk")
    row.get_by_label("Student for helpdesk").fill("json-1")
    row.get_by_role("button", name="Distil helpdesk").click()
    page.wait_for_url("**/distillations/distill_*")
    assert "Started" in page.locator("main").inner_text()
    # the page reloads itself every 5 s until the run ends
    page.locator(".distillation-status", has_text="succeeded").wait_for(timeout=180_000)
    runs = page.locator("table.distillation-runs tbody tr")
    assert runs.count() == 3
    assert runs.nth(0).inner_text().startswith("teacher")
    assert "ft:json-1" in runs.nth(2).inner_text()
    assert "of the teacher" in page.locator(".verdict").inner_text()
    page.get_by_role("link", name="helpdesk-distilled").click()
    page.wait_for_url("**/routes/route_*")
    assert "shadow" in page.locator("main").inner_text()
    assert page.dialogs == []
