"""The routes pages in real Chromium: a route with real traffic, its numbers and events, user
content kept inert, and the rollback button (the dashboard's emergency stop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.routes import PROMPT, Routes, ask

pytestmark = pytest.mark.browser

XSS = "<script>alert(1)</script>"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'distillery.db'}"


def test_routes_pages_show_traffic_and_roll_back(
    client: openai.OpenAI, gateway: Any, page: Any
) -> None:
    routes = Routes(gateway.url)
    route = routes.ok(
        routes.create(
            name=f"問い合わせ振り分け {XSS}",
            match={"model": "json-1", "metadata": {**PROMPT, "note": XSS}},
            student="echo-1",
            mode="full",
            force=True,
            graders=[{"type": "json_schema", "name": "schema", "schema": SCHEMA, "blocking": True}],
        )
    )
    for i in range(3):  # the student's prose fails the schema: the teacher answers
        _, headers = ask(client, f"質問 {i}", model="json-1", metadata={**PROMPT, "note": XSS})
        assert headers["x-distillery-served-by"] == "fallback"

    page.goto(gateway.url + "/routes")
    assert page.evaluate("document.characterSet") == "UTF-8"
    row = page.locator(f'tr[data-id="{route["id"]}"]')
    assert "問い合わせ振り分け" in row.inner_text()
    assert XSS in row.inner_text()  # shown as text
    assert page.locator("main script").count() == 0 and page.dialogs == []
    cells = row.locator("td").all_inner_texts()
    assert cells[3].startswith("full") and cells[4] == "3" and cells[5] == "100.0%"

    row.locator("a").click()
    page.wait_for_url(f"**/routes/{route['id']}")
    main = page.locator("main").inner_text()
    assert "fallback" in main and "grader:schema: 3" in main
    assert "gate_bypassed" in main and "created" in main
    # the timeline: who answered each request, and the phases
    timeline = page.locator("section#timeline")
    assert timeline.get_by_role("heading", name="Timeline").count() == 1
    chart = timeline.locator("figure svg[role=img]")
    assert chart.count() == 1
    assert chart.locator("g.lanes text").all_text_contents() == [
        "teacher (0)",
        "student (0)",
        "fallback (3)",
    ]
    assert chart.locator("g.lanes rect").count() == 3
    assert chart.locator("g.bands text").all_text_contents() == ["full"]
    assert chart.locator("g.marks text").all_text_contents() == ["gate bypassed"]
    rows = timeline.locator("#phases tbody tr")
    assert rows.count() == 1
    cells = rows.first.locator("td").all_inner_texts()
    assert cells[0] == "full" and cells[2:6] == ["3", "0", "0", "3"]
    assert cells[6] == "0.0% passes (0–0%)"  # each fallback is a failed answer to a user
    # the student's attempt, stored under its own model, names the route and the requested model
    attempt = client.chat.completions.list(model="echo-1").data[0]
    page.goto(gateway.url + f"/completions/{attempt.id}")
    assert "requested json-1" in page.locator(".routed").inner_text()
    page.locator(".routed a").click()
    page.wait_for_url(f"**/routes/{route['id']}")
    page.get_by_role("button", name="Roll back to shadow").click()
    page.wait_for_url(f"**/routes/{route['id']}")
    assert "Rolled back to shadow." in page.locator(".flash").inner_text()
    assert page.locator(".event-rolled_back").count() == 1
    rows = page.locator("#phases tbody tr")
    assert rows.count() == 2
    assert rows.nth(1).get_attribute("class") == "phase-rolled_back"
    assert rows.nth(1).locator("td").first.inner_text() == "shadow (rolled back)"
    assert rows.nth(1).locator("td").nth(2).inner_text() == "0"
    marks = page.locator("section#timeline g.marks text").all_text_contents()
    assert marks == ["gate bypassed", "rolled back"]
    assert routes.get(route["id"])["mode"] == "shadow"
    assert page.get_by_role("button", name="Roll back to shadow").count() == 0
    assert page.dialogs == []
