"""The backtest's HTML report: a timeline per scenario with its alerts, well-formed, and safe with hostile names."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import orjson

from detectors.query_rate import QueryRateDetector
from modelsiem.evaluate import MAX_MARKS, AttackScore, BenignScore, Evaluation, Mark, evaluate
from modelsiem.report import html_report
from modelsiem.scenarios import simulate
from stream.engine import Engine

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SVG = "{http://www.w3.org/2000/svg}"


def _page(html: str) -> ET.Element:
    return ET.fromstring(html.split("\n", 1)[1])  # well-formed XHTML after the doctype line


def test_each_attack_gets_a_timeline_with_its_events_and_every_alert_revision_about_it() -> None:
    trace = simulate(["query_flood", "heavy_integrators"], minutes=30, principals=10, start=START)
    result = evaluate(enumerate(map(orjson.dumps, trace.sorted_events())), trace.truth, Engine([QueryRateDetector()]))
    [flood] = result.attacks
    assert flood.detected and flood.timeline.marks
    assert sum(flood.timeline.minutes.values()) == flood.attack_events
    assert result.start == min(e.epoch for e in map(_event, trace.sorted_events()))

    svgs = _page(html_report(result, "trace.jsonl")).iter(f"{SVG}svg")
    first = next(svgs)  # the attack's, before any benign pattern's
    events = [r for r in first.iter(f"{SVG}rect") if r.get("class") == "events"]
    alerts = [line for line in first.iter(f"{SVG}line")]
    assert len(events) == len(flood.timeline.minutes)
    assert len(alerts) == len(flood.timeline.marks)
    assert [line.get("class") for line in alerts].count("first-alert") == 1
    # The first alert's line is where the first alert was in event time, within the drawing's rounding.
    thick = next(line for line in alerts if line.get("class") == "first-alert")
    at = min(m.at for m in flood.timeline.marks)
    expected = 4 + (at - result.start) / (result.end - result.start) * (900 - 8)
    assert abs(float(thick.get("x1")) - expected) < 0.2


def _event(raw: dict):  # type: ignore[no-untyped-def]
    from stream.decode import decode

    return decode(orjson.dumps(raw))


def test_hostile_scenario_names_and_subjects_are_escaped() -> None:
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    attack = AttackScore(hostile, "AML.T0024", attack_events=3, detected=True, events_before_alert=1, alerts=1,
                         max_severity="low")
    attack.timeline.count(60.0)
    attack.timeline.mark(Mark(70.0, "query_rate", "low", 1, hostile, 1))
    benign = BenignScore(hostile, events=5, alerts=1, max_severity="low")
    benign.timeline.mark(Mark(80.0, "query_rate", "low", 1, hostile, 1))
    result = Evaluation(events=8, benign_events=5, attacks=[attack], benign=[benign], start=0.0, end=600.0)
    result.false_marks.mark(Mark(80.0, "query_rate", "low", 1, hostile, 1))
    page = html_report(result, hostile)
    assert "<script" not in page and "<img" not in page
    root = _page(page)  # parses: no attribute or element was broken out of
    assert hostile in "".join(root.itertext())


def test_a_timeline_keeps_a_bounded_number_of_alert_revisions_and_counts_the_rest() -> None:
    attack = AttackScore("flood", None)
    for i in range(MAX_MARKS + 7):
        attack.timeline.mark(Mark(float(i), "query_rate", "low", i + 1, "key", 1))
    assert len(attack.timeline.marks) == MAX_MARKS and attack.timeline.marks_left_out == 7
    page = html_report(Evaluation(attacks=[attack], start=0.0, end=300.0), "t")
    assert "7 more alert revisions not drawn" in page


def test_evaluate_writes_the_report_from_the_command_line(tmp_path) -> None:
    trace, truth, report = tmp_path / "t.jsonl", tmp_path / "truth.json", tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "modelsiem", "simulate", "--scenario", "query_flood", "--minutes", "20",
                    "--out", str(trace), "--truth", str(truth)], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "modelsiem", "evaluate", str(trace), "--truth", str(truth),
                           "--html", str(report), "--json"], check=True, capture_output=True)
    figures = orjson.loads(done.stdout)
    assert figures["attacks"][0]["detected"] and "timeline" not in figures["attacks"][0]
    page = _page(report.read_text())
    assert "query_flood" in "".join(page.itertext())
