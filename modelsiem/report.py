"""The backtest as one self-contained HTML page: the figures, and a timeline per scenario.

Each timeline spans the whole trace in event time. Bars are the scenario's
events per minute; a vertical line is an alert revision about it, coloured by
severity, with the rule, subject and accounts named in its tooltip; the first
alert is drawn thicker. The page has no scripts and loads nothing: it can be
attached to a pull request or opened offline.

Scenario names and alert subjects come from the trace, which may hold any
text: everything written into the page is escaped.

>>> from modelsiem.evaluate import AttackScore, Evaluation, Mark
>>> result = Evaluation(start=0.0, end=600.0, attacks=[AttackScore("<flood>", "AML.T0024", attack_events=9)])
>>> result.attacks[0].timeline.mark(Mark(300.0, "query_rate", "low", 1, "<b>key</b>", 1))
>>> page = html_report(result, "trace.jsonl")
>>> "&lt;flood&gt;" in page and "<b>key" not in page
True
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from modelsiem.evaluate import AttackScore, BenignScore, Evaluation, Mark, Timeline

_WIDTH, _HEIGHT, _PAD = 900, 64, 4
_COLOURS = {"low": "#4c78a8", "medium": "#f2a900", "high": "#e4572e", "critical": "#8b0000"}
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
.missed { color: #b00; font-weight: bold; }
svg { background: #fafafa; border: 1px solid #ddd; }
.legend span { display: inline-block; width: 1em; height: 0.8em; margin: 0 0.3em 0 1em; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _svg(timeline: Timeline, start: float, end: float, first: bool) -> str:
    """Events per minute as bars and alert revisions as lines, over ``start``..``end``."""
    span = max(end - start, 60.0)

    def x(epoch: float) -> float:
        return round(_PAD + (epoch - start) / span * (_WIDTH - 2 * _PAD), 1)

    peak = max(timeline.minutes.values(), default=1)
    bar = max((_WIDTH - 2 * _PAD) * 60 / span, 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
             f'viewBox="0 0 {_WIDTH} {_HEIGHT}">']
    for minute, count in sorted(timeline.minutes.items()):
        height = round(count / peak * (_HEIGHT - 2 * _PAD), 1)
        parts.append(f'<rect class="events" x="{x(minute * 60)}" y="{_HEIGHT - _PAD - height}" width="{bar:.1f}" '
                     f'height="{height}" fill="#9ecae1"><title>{_e(_time(minute * 60))}: {count} events</title></rect>')
    for index, mark in enumerate(sorted(timeline.marks, key=lambda m: m.at)):
        thick = first and index == 0
        parts.append(
            f'<line class="{"first-alert" if thick else "alert"}" x1="{x(mark.at)}" x2="{x(mark.at)}" y1="0" '
            f'y2="{_HEIGHT}" stroke="{_COLOURS.get(mark.severity, "#000")}" stroke-width="{3 if thick else 1}">'
            f'<title>{_e(_describe(mark))}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def _describe(mark: Mark) -> str:
    return (f"{_time(mark.at)} {mark.rule} revision {mark.revision}, {mark.severity}: "
            f"{mark.subject} ({mark.named} accounts named)")


def _section(score: AttackScore | BenignScore, start: float, end: float, figures: str) -> str:
    timeline = score.timeline
    left_out = (f"<p>{timeline.marks_left_out} more alert revisions not drawn.</p>"
                if timeline.marks_left_out else "")
    return (f"<h3>{_e(score.scenario)}</h3><p>{figures}</p>"
            f"{_svg(timeline, start, end, first=isinstance(score, AttackScore))}{left_out}")


def html_report(result: Evaluation, title: str) -> str:
    """The page for one evaluation of the trace named ``title``."""
    start = result.start if result.start is not None else 0.0
    end = result.end if result.end is not None else start
    rows = []
    for a in result.attacks:
        detected = (f"after {a.events_before_alert} of {a.attack_events} events" if a.detected
                    else '<span class="missed">missed</span>')
        rows.append(f"<tr><td>{_e(a.scenario)}</td><td>{_e(a.technique or '')}</td><td>{detected}</td>"
                    f"<td>{a.alerts}</td><td>{_e(a.max_severity or '')}</td>"
                    f"<td>{a.accounts_named} of {a.accounts_involved}</td><td>{a.named_outside_attack}</td></tr>")
    attacks = "".join(
        _section(a, start, end, (f"{a.attack_events} events; first alert after {a.events_before_alert}"
                                 if a.detected else f"{a.attack_events} events; no alert"))
        for a in result.attacks)
    alerted = [b for b in result.benign if b.alerts]
    benign = "".join(_section(b, start, end, f"{b.events} events, {b.alerts} alerts, up to {_e(b.max_severity)}")
                     for b in alerted)
    quiet = ", ".join(f"{_e(b.scenario)} ({b.events} events)" for b in result.benign if not b.alerts)
    false_rows = "".join(
        f"<tr><td>{_e(_time(m.at))}</td><td>{_e(m.rule)}</td><td>{_e(m.severity)}</td><td>{m.revision}</td>"
        f"<td>{_e(m.subject)}</td></tr>" for m in result.false_marks.marks)
    legend = "".join(f'<span style="background:{colour}"></span>{name}' for name, colour in _COLOURS.items())
    return f"""<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>
<title>modelsiem backtest: {_e(title)}</title><style>{_STYLE}</style></head><body>
<h1>Backtest of {_e(title)}</h1>
<p>{result.events} events ({result.benign_events} benign, {result.rejected} rejected) from {_e(_time(result.start))}
to {_e(_time(result.end))} (event time, UTC); {result.alert_ids} alerts, {result.false_alerts} about no attack:
{result.false_alerts_per_million:.2f} per million benign events; {result.quarantined_benign} benign events
quarantined.</p>
<table><tr><th>attack</th><th>ATLAS</th><th>detected</th><th>alerts</th><th>max severity</th>
<th>accounts named</th><th>named outside</th></tr>{"".join(rows)}</table>
<p class="legend">Bars: the scenario's events per minute. Lines: alert revisions about it (hover for details),
the first one thicker.{legend}</p>
<h2>Attacks</h2>{attacks}
<h2>Benign patterns that drew alerts</h2>{benign or "<p>None.</p>"}
<p>Without alerts: {quiet or "none"}.</p>
<h2>Alerts about no attack</h2>
{f'<table><tr><th>time</th><th>rule</th><th>severity</th><th>revision</th><th>subject</th></tr>{false_rows}</table>'
 if false_rows else "<p>None.</p>"}
</body></html>
"""
