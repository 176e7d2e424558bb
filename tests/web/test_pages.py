"""Every dashboard page over HTTP against a live gateway with every area seeded (SQLite and
PostgreSQL): status, seeded data shown, escaping, HTML error pages, sign-in, cross-site posts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .seed import JA_QUESTION, XSS, Seeded, everything

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def seeded(client: openai.OpenAI, gateway: Any) -> Seeded:
    return everything(client, gateway.services)


def get(gateway: Any, path: str, expect: int = 200, **params: Any) -> str:
    r = httpx.get(gateway.url + path, params=params or None, timeout=30, follow_redirects=False)
    assert r.status_code == expect, (path, r.status_code, r.text[:2000])
    assert r.headers["content-type"].startswith("text/html")
    assert "charset=utf-8" in r.headers["content-type"]
    return r.text


def svgs(html: str) -> list[ET.Element]:
    out = []
    start = 0
    while (i := html.find("<svg", start)) >= 0:
        j = html.index("</svg>", i) + len("</svg>")
        out.append(ET.fromstring(html[i:j]))
        start = j
    return out


def test_every_page_shows_its_seeded_data(gateway: Any, seeded: Seeded) -> None:
    s = seeded
    home = get(gateway, "/")
    assert '<meta charset="utf-8">' in home and "Noto Sans CJK JP" not in home  # in the CSS
    assert "gpt-4o" in home and "$" in home
    for label in ("Stored completions", "Datasets", "Eval runs", "Fine-tuning jobs", "Models"):
        assert label in home

    listing = get(gateway, "/completions")
    assert all(cid in listing for cid in s.ids.values())
    assert JA_QUESTION in listing
    assert XSS not in listing and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing

    detail = get(gateway, f"/completions/{s.ids['ja']}")
    assert JA_QUESTION in detail and f"echo: {JA_QUESTION}" in detail and 'lang="ja"' in detail

    queues = get(gateway, "/annotations")
    assert "support review レビュー" in queues and s.queue_id in queues
    queue = get(gateway, f"/annotations/{s.queue_id}")
    assert s.ids["ja"] in queue and s.ids["en"] in queue and "Claim next item" in queue
    item_id = gateway.services.annotations.list_items(s.queue_id).data[0].id
    item = get(gateway, f"/annotations/{s.queue_id}/items/{item_id}")
    assert "<textarea" in item and "Accept" in item

    datasets = get(gateway, "/datasets")
    assert "support-ja" in datasets and s.dataset_id in datasets
    dataset = get(gateway, f"/datasets/{s.dataset_id}")
    for text in ("Splits", "train", "Tokens", "Training cost estimate", "Duplicates", "v1"):
        assert text in dataset
    assert JA_QUESTION in dataset  # an example

    evals = get(gateway, "/evals")
    assert "support quality 品質" in evals and all(r in evals for r in s.run_ids)
    assert s.run_ids[0] in get(gateway, f"/evals/{s.eval_id}")
    run = get(gateway, f"/evals/{s.eval_id}/runs/{s.run_ids[0]}")
    assert "mentions echo" in run and "exact answer" in run
    assert "100.0%" in run and "0.0%" in run  # the two criteria's pass rates
    assert JA_QUESTION in run  # a failing item (every item fails "exact answer")
    (chart,) = svgs(run)
    assert chart.find(f"{SVG}title").text == "Pass rate per criterion"  # type: ignore[union-attr]

    compare = get(gateway, "/evals/compare", run_ids=",".join(s.run_ids), baseline=s.run_ids[0])
    assert "baseline" in compare and "gpt-4o support" in compare and "gpt-4o router" in compare
    (bars,) = svgs(compare)
    assert len(bars.findall(f".//{SVG}rect[{SVG}title]")) == 6  # 2 runs x (2 criteria + overall)
    # the same comparison from repeated run_ids (the evals page's checkboxes)
    get(gateway, f"/evals/compare?run_ids={s.run_ids[0]}&run_ids={s.run_ids[1]}")

    jobs = get(gateway, "/jobs")
    assert s.job_id in jobs and "succeeded" in jobs
    job = get(gateway, f"/jobs/{s.job_id}")
    assert s.model_id + ":ckpt-step-5" in job and "Step 10/10" in job
    (loss,) = svgs(job)
    assert len(loss.findall(f".//{SVG}polyline")) == 1
    assert "train_loss" in (loss.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]

    models = get(gateway, "/models")
    assert s.model_id in models and "gpt-4o" in models and "smollm2-135m-instruct" in models

    costs = get(gateway, "/costs")
    assert "support" in costs and "router" in costs and "gpt-4o" in costs
    by_lang = get(gateway, "/costs", group="lang")
    assert "Per lang" in by_lang and "<td>ja</td>" in by_lang and "<td>en</td>" in by_lang
    assert "letters, digits" in get(gateway, "/costs", expect=400, group="a b")


def test_completion_filters_and_pagination(gateway: Any, seeded: Seeded) -> None:
    s = seeded
    only = get(gateway, "/completions", meta="prompt=support", status="completed")
    assert s.ids["ja"] in only and s.ids["en"] in only and s.ids["other"] not in only
    assert "error:" not in only
    failed = get(gateway, "/completions", status="failed")
    assert "scripted failure 400" in failed and s.ids["ja"] not in failed
    found = get(gateway, "/completions", q="経費精算")
    assert s.ids["ja2"] in found and s.ids["ja"] not in found
    assert s.ids["en"] in get(gateway, "/completions", model="gpt-4o", meta="lang=en")
    assert "No completions match" in get(gateway, "/completions", until="2001-01-01")
    assert s.ids["en"] in get(gateway, "/completions", since="2001-01-01")

    page1 = get(gateway, "/completions", limit=2)
    assert 'rel="next"' in page1 and 'rel="prev"' not in page1
    nxt = page1.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    page2 = get(gateway, nxt)
    assert 'rel="prev"' in page2


def test_errors_are_html_pages_for_pages_and_json_for_the_api(gateway: Any) -> None:
    missing = get(gateway, "/completions/chatcmpl-nope", expect=404)
    assert "404" in missing and "chatcmpl-nope" in missing
    assert "There is no page" in get(gateway, "/no/such/page", expect=404)
    assert "YYYY-MM-DD" in get(gateway, "/completions", expect=400, since="yesterday")
    assert "key=value" in get(gateway, "/completions", expect=400, meta="novalue")
    assert "limit" in get(gateway, "/completions", expect=400, limit="0")
    for path in ("/datasets/nope", "/annotations/nope", "/jobs/nope", "/evals/nope/runs/x"):
        get(gateway, path, expect=404)
    api = httpx.get(gateway.url + "/v1/chat/completions/chatcmpl-nope")
    assert api.status_code == 404 and set(api.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert httpx.get(gateway.url + "/v1/nope").json()["error"]["message"] == "Not found."
    css = httpx.get(gateway.url + "/static/dashboard.css")
    assert css.status_code == 200 and "Noto Sans CJK JP" in css.text
    assert httpx.get(gateway.url + "/static/..%2Fpages.py").status_code == 404


def test_cross_site_form_posts_are_refused(gateway: Any, seeded: Seeded) -> None:
    r = httpx.post(
        gateway.url + "/completions/actions",
        data={"action": "annotate", "ids": [seeded.ids["en"]]},
        headers={"Origin": "http://evil.example"},
    )
    assert r.status_code == 403 and "Cross-site" in r.text


@pytest.fixture
def auth_gateway(home: Path, db_url: str, fake_openai: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from distillery.app import build_services, create_app
    from distillery.settings import Settings
    from tests.support.config import write_config
    from tests.support.live import LiveServer

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-secret-value-123456")
    config = write_config(home, fake_openai, extra="[server]\nauth = true\n")
    settings = Settings(home=home, database_url=db_url, config=config, api_key="dk-bootstrap-admin")
    services = build_services(settings)
    server = LiveServer(create_app(services)).start()
    server.services = services  # type: ignore[attr-defined]
    yield server
    server.stop()
    services.store.close()


def test_sign_in_with_an_admin_key(auth_gateway: Any) -> None:
    gw = auth_gateway
    _, ingest = gw.services.keys.create(scope="ingest", name="app")
    _, admin = gw.services.keys.create(scope="admin", name="me")
    with httpx.Client(base_url=gw.url, follow_redirects=False) as browser:
        r = browser.get("/completions?model=x")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fcompletions%3Fmodel%3Dx"
        assert browser.get("/login").status_code == 200
        assert browser.get("/static/dashboard.css").status_code == 200
        for wrong in ("", "nope", ingest):
            r = browser.post("/login", data={"key": wrong, "next": "/"})
            assert r.status_code == 401 and "not an admin key" in r.text
            assert wrong not in r.text or not wrong
        for key in (admin, "dk-bootstrap-admin"):
            browser.cookies.clear()
            r = browser.post("/login", data={"key": key, "next": "/completions?model=x"})
            assert r.status_code == 303 and r.headers["location"] == "/completions?model=x"
            cookie = r.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
            assert key not in cookie
            page = browser.get("/completions")
            assert page.status_code == 200 and "Sign out" in page.text and key not in page.text
        r = browser.post("/logout")
        assert r.status_code == 303
        assert browser.get("/").status_code == 303
    # an offsite redirect target is ignored
    r = httpx.post(gw.url + "/login", data={"key": admin, "next": "//evil.example/"})
    assert r.headers["location"] == "/"
    # the API keeps its own bearer auth and JSON errors
    assert httpx.get(gw.url + "/v1/models").status_code == 401


def test_cancel_a_running_job(gateway: Any) -> None:
    import time

    jobs = gateway.services.fine_tuning.jobs
    now = int(time.time())
    body = {"id": "ftjob-cancelme", "object": "fine_tuning.job", "model": "smollm2-135m-instruct"}
    jobs.insert(
        job_id="ftjob-cancelme",
        created_at=now,
        status="running",
        backend="local",
        body=body,
        state={},
    )
    # held by a live worker elsewhere (a fresh heartbeat), so no worker here takes it
    assert jobs.claim(
        "ftjob-cancelme",
        worker_id="elsewhere",
        from_status="running",
        to_status="running",
        now=time.time() + 3600,
    )
    page = get(gateway, "/jobs/ftjob-cancelme")
    assert "Cancel job" in page and 'http-equiv="refresh"' in page  # a running job reloads
    with httpx.Client(base_url=gateway.url) as browser:
        r = browser.post("/jobs/ftjob-cancelme/cancel", follow_redirects=True)
        assert r.status_code == 200 and "Cancelled" in r.text
        assert jobs.get("ftjob-cancelme").status == "cancelled"
        assert "Cancel job" not in r.text and 'http-equiv="refresh"' not in r.text
        again = browser.post("/jobs/ftjob-cancelme/cancel", follow_redirects=True)
        assert "only a job that has not ended can be cancelled" in again.text
