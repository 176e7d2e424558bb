"""``distillery.charts``: valid, accessible SVG with escaped (and Japanese) labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from distillery.charts import FONT_STACK, PALETTE, bar_chart, line_chart, nice_ticks, timeline_chart

NS = "{http://www.w3.org/2000/svg}"
NASTY = '<b>"x" & y</b>'


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    assert root.get("role") == "img"
    labelled = (root.get("aria-labelledby") or "").split()
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    assert labelled and set(labelled) <= ids
    return root


def texts(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{NS}text")]


def test_bar_chart_groups_labels_values_and_axis() -> None:
    series = {
        "teacher gpt-4o": {"正確さ": 0.9, "tone": 0.8, "format": 1.0},
        "student ft:smollm2": {"正確さ": 0.7, "tone": None, "format": 0.95},
    }
    svg = bar_chart(series, title="教師と生徒", y_label="pass rate", y_max=1.0)
    root = parse(svg)
    assert root.find(f"{NS}title").text == "教師と生徒"  # type: ignore[union-attr]
    desc = root.find(f"{NS}desc").text or ""  # type: ignore[union-attr]
    assert "teacher gpt-4o: 正確さ 0.90" in desc and "student ft:smollm2" in desc
    bars = root.findall(f".//{NS}g[@class='bars']/{NS}rect")
    assert len(bars) == 5  # the None value is left out
    assert {b.find(f"{NS}title").text for b in bars} >= {  # type: ignore[union-attr]
        "teacher gpt-4o · 正確さ: 0.90",
        "student ft:smollm2 · format: 0.95",
    }
    labels = texts(root)
    for expected in ("正確さ", "tone", "format", "0.90", "0.70", "teacher gpt-4o", "pass rate"):
        assert expected in labels
    # the axis runs from 0 to 1 (y_max), with round ticks
    assert {"0.00", "0.25", "0.50", "0.75", "1.00"} <= set(labels)
    # taller bar for the larger value
    heights = {b.find(f"{NS}title").text: float(b.get("height") or 0) for b in bars}  # type: ignore[union-attr]
    assert heights["teacher gpt-4o · 正確さ: 0.90"] > heights["student ft:smollm2 · 正確さ: 0.70"]
    assert "Noto Sans CJK JP" in (root.get("font-family") or "") and "Hiragino Sans" in FONT_STACK


def test_labels_are_escaped_everywhere() -> None:
    svg = bar_chart({NASTY: {NASTY: 1.5}}, title=NASTY, value_format=lambda v: f"<{v}>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    root = parse(svg)
    assert root.find(f"{NS}title").text == NASTY  # type: ignore[union-attr]
    assert NASTY in texts(root) and "<1.5>" in texts(root)
    line = line_chart({NASTY: [(1, 2.0), (2, 1.0)]}, title=NASTY, x_label=NASTY, y_label=NASTY)
    assert "<b>" not in line
    assert texts(parse(line)).count(NASTY) == 4  # heading, x label, y label, legend


def test_negative_values_and_empty_bar_chart() -> None:
    root = parse(bar_chart({"delta": {"a": -0.5, "b": 2.0}}, title="delta"))
    assert "-0.5" in " ".join(texts(root))
    empty = parse(bar_chart({}, title="nothing"))
    assert "no data" in texts(empty)
    assert "no data" in texts(parse(bar_chart({"s": {"a": None}}, title="none")))


def test_line_chart_loss_curves() -> None:
    curves = {
        "train_loss": [(3, 1.2), (1, 2.5), (2, 1.8), (4, float("nan"))],
        "valid_loss": [(3, 1.6)],
    }
    root = parse(line_chart(curves, title="損失 loss"))
    (polyline,) = root.iter(f"{NS}polyline")
    points = [tuple(map(float, p.split(","))) for p in (polyline.get("points") or "").split()]
    assert len(points) == 3  # the NaN point is left out
    assert [x for x, _ in points] == sorted(x for x, _ in points)  # drawn in step order
    assert points[0][1] < points[-1][1]  # loss falls: the line goes down (SVG y grows downward)
    assert len(list(root.iter(f"{NS}circle"))) == 1  # a one-point series is a dot
    labels = texts(root)
    assert "step" in labels and "loss" in labels and "train_loss" in labels
    assert {"1", "2", "3"} <= set(labels)  # integer step ticks
    desc = root.find(f"{NS}desc").text or ""  # type: ignore[union-attr]
    assert "train_loss: 3 points, last 1.20 at step 3" in desc
    assert "no data" in texts(parse(line_chart({"x": []}, title="empty")))


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0, 97)[-1] >= 97 and nice_ticks(0, 97)[0] == 0
    flat = nice_ticks(5, 5)
    assert len(flat) > 1 and flat[0] <= 5 <= flat[-1]
    ticks = nice_ticks(-3, 7)
    assert ticks[0] <= -3 and ticks[-1] >= 7


def test_timeline_chart_lanes_bands_and_marks() -> None:
    items = ["teacher"] * 3 + ["student", "fallback", "student"] + ["teacher"] * 2
    svg = timeline_chart(
        ["teacher", "student", "fallback", "cache"],
        items,
        title="問い合わせの振り分け",
        bands=[(0, "shadow"), (3, "canary 50%"), (6, "shadow")],
        marks=[(6, "rolled back"), (3, "gate passed")],
    )
    root = parse(svg)
    assert root.find(f"{NS}title").text == "問い合わせの振り分け"  # type: ignore[union-attr]
    desc = root.find(f"{NS}desc").text or ""  # type: ignore[union-attr]
    assert desc.startswith("8 requests; teacher: 5, student: 2, fallback: 1, cache: 0")
    assert "phases: shadow, canary 50%, shadow" in desc
    assert "gate passed at request 4" in desc and "rolled back at request 7" in desc
    # a lane per kind, an empty one too; a tick per item in its lane's colour
    lanes = root.find(f".//{NS}g[@class='lanes']")
    assert lanes is not None
    assert [t.text for t in lanes.iter(f"{NS}text")] == [
        "teacher (5)",
        "student (2)",
        "fallback (1)",
        "cache (0)",
    ]
    ticks = lanes.findall(f"{NS}rect")
    assert len(ticks) == 8
    by_colour = {c: sum(1 for t in ticks if t.get("fill") == c) for c in PALETTE[:3]}
    assert by_colour == {PALETTE[0]: 5, PALETTE[1]: 2, PALETTE[2]: 1}
    xs = [float(t.get("x") or 0) for t in ticks if t.get("fill") == PALETTE[0]]
    assert xs == sorted(xs)  # in order along x
    # shaded phases from their first item to the next phase, labelled
    bands = root.findall(f".//{NS}g[@class='bands']/{NS}rect")
    assert [b.find(f"{NS}title").text for b in bands] == [  # type: ignore[union-attr]
        "shadow: requests 1-3",
        "canary 50%: requests 4-6",
        "shadow: requests 7-8",
    ]
    widths = [float(b.get("width") or 0) for b in bands]
    assert widths[0] == pytest.approx(widths[1]) and widths[2] == pytest.approx(widths[0] * 2 / 3)
    # dashed marks in order, on the band boundaries they name
    marks = root.find(f".//{NS}g[@class='marks']")
    assert marks is not None
    assert [t.text for t in marks.iter(f"{NS}text")] == ["gate passed", "rolled back"]
    lines = marks.findall(f"{NS}line")
    assert all(line.get("stroke-dasharray") for line in lines)
    starts = [float(b.get("x") or 0) for b in bands]
    assert [float(line.get("x1") or 0) for line in lines] == pytest.approx(starts[1:])
    assert texts(root)[-1] == "8 requests"


def test_timeline_chart_escapes_and_handles_no_data() -> None:
    svg = timeline_chart(
        [NASTY, "生徒"],
        [NASTY, "生徒", NASTY],
        title=NASTY,
        bands=[(0, NASTY)],
        marks=[(1, NASTY)],
    )
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    root = parse(svg)
    assert root.find(f"{NS}title").text == NASTY  # type: ignore[union-attr]
    labels = texts(root)
    assert labels.count(NASTY) == 3  # heading, band, mark
    assert f"{NASTY} (2)" in labels and "生徒 (1)" in labels  # the lanes
    band = root.find(f".//{NS}g[@class='bands']/{NS}rect/{NS}title")
    assert band is not None and band.text == f"{NASTY}: requests 1-3"
    assert f"events: {NASTY} at request 2" in (root.find(f"{NS}desc").text or "")  # type: ignore[union-attr]
    empty = parse(timeline_chart(["teacher", "student"], [], title="nothing yet"))
    assert texts(empty) == ["nothing yet", "no data"]  # the heading, and no lanes
    assert (empty.find(f"{NS}desc").text or "").startswith("0 requests; teacher: 0, student: 0")  # type: ignore[union-attr]
    assert empty.find(f".//{NS}g[@class='lanes']") is None
    # bands and marks past the end are clamped; a band with nothing in it is not drawn
    root = parse(
        timeline_chart(
            ["a"], ["a", "a"], title="t", bands=[(0, "one"), (2, "two")], marks=[(9, "late")]
        )
    )
    assert [t.text for t in root.findall(f".//{NS}g[@class='bands']/{NS}text")] == ["one"]
    (line,) = root.findall(f".//{NS}g[@class='marks']/{NS}line")
    band = root.find(f".//{NS}g[@class='bands']/{NS}rect")
    assert band is not None
    right = float(band.get("x") or 0) + float(band.get("width") or 0)
    assert float(line.get("x1") or 0) == pytest.approx(right)
