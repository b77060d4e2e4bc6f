"""The ``modelsiem`` command."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from modelsiem.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka and Elasticsearch stack (no Docker needed).")
app.add_typer(stack_app, name="stack")
err = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, markup=False)],
    )
    # The client logs every non-2xx answer, expected ones (404 on an existence check) included;
    # modelsiem logs the failures that matter itself.
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    return settings


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from detectors.registry import build
    from stream.engine import Engine

    return Engine(build(settings.detectors, settings.detector_params), max_keys=settings.max_keys)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(1)


Only = Annotated[Optional[str], typer.Option(help="kafka or elasticsearch alone.")]


@stack_app.command("up")
def stack_up(only: Only = None) -> None:
    """Start Kafka and Elasticsearch on loopback and wait until both are healthy."""
    from modelsiem import stack

    try:
        stack.up(_settings(), only=only, echo=err.print)
    except stack.StackError as exc:
        raise _fail(str(exc)) from None


@stack_app.command("down")
def stack_down(only: Only = None) -> None:
    """Stop both servers; their data stays for the next `up`."""
    from modelsiem import stack

    try:
        stack.down(_settings(), only=only, echo=err.print)
    except stack.StackError as exc:
        raise _fail(str(exc)) from None


@stack_app.command("status")
def stack_status() -> None:
    """Show whether each server runs."""
    from modelsiem import stack

    for name, state in stack.status(_settings()).items():
        out.print(f"{name:14} {state}", highlight=False)


class SchemaName(str, Enum):
    inference = "inference"
    feedback = "feedback"
    alert = "alert"


@app.command()
def schema(name: SchemaName) -> None:
    """Print the JSON Schema of an event kind or of the alert document."""
    from stream.alert_schema import AlertDocument
    from stream.events import FeedbackEvent, InferenceEvent

    if name is SchemaName.alert:
        schema = AlertDocument.model_json_schema(by_alias=True, mode="serialization")
    else:
        schema = {"inference": InferenceEvent, "feedback": FeedbackEvent}[name.value].json_schema()
    print(json.dumps(schema, indent=2))


@app.command()
def detectors() -> None:
    """List the installed detectors and their metadata."""
    from detectors.registry import available

    table = Table("id", "name", "ATLAS", "severity", "key", "events")
    for det_id, cls in available().items():
        m = cls.meta
        tech = m.subtechnique.id if m.subtechnique else m.technique.id
        table.add_row(det_id, m.name, tech, m.severity, cls.partition_key, ",".join(sorted(m.event_kinds)))
    out.print(table)


@app.command()
def topics() -> None:
    """Create the event, alert and dead-letter topics (idempotent)."""
    from connectors.kafka import ensure_topics

    for name, partitions in ensure_topics(_settings()).items():
        out.print(f"{name}: {partitions} partitions", highlight=False)


@app.command()
def worker() -> None:
    """Run the stream processor (faust worker) until interrupted."""
    import faust

    from connectors.kafka import ensure_topics
    from detectors.registry import build
    from stream.app import create_app
    from stream.runtime import collect_less_often

    settings = _settings()
    partitions = ensure_topics(settings)
    t = settings.topics
    if partitions[t.inference] != partitions[t.feedback]:
        raise _fail(f"{t.inference} and {t.feedback} must have the same partition count "
                    f"({partitions[t.inference]} != {partitions[t.feedback]})")
    faust_app = create_app(settings, build(settings.detectors, settings.detector_params), partitions[t.inference])
    collect_less_often()
    faust.Worker(faust_app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@app.command()
def sink() -> None:
    """Run the Elasticsearch sink until interrupted."""
    import signal
    import threading

    from connectors.elasticsearch_sink import Sink

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    s = Sink(_settings(), stop)
    err.print(f"sink: writing alerts to {s.setup()} {s.settings.elasticsearch.data_stream}", highlight=False)
    s.run()
    err.print(f"sink stopped: {s.totals}", highlight=False)


@app.command()
def run() -> None:
    """Run the worker and the Elasticsearch sink together."""
    sink_proc = subprocess.Popen([sys.executable, "-m", "modelsiem", "sink"])
    try:
        worker()
    finally:
        sink_proc.terminate()
        sink_proc.wait(30)


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON-lines events file.")],
    alerts_out: Annotated[Path, typer.Option(help="Where to write the ECS alerts, one per line.")],
    quarantine_out: Annotated[
        Optional[Path], typer.Option(help="Where to write the quarantine records (feedback to exclude from retraining).")
    ] = None,
) -> None:
    """Run the detectors over a JSON-lines file, with no Kafka or Elasticsearch."""
    from connectors.files import JsonLinesWriter, read_lines
    from stream.replay import replay as run_replay
    from stream.runtime import collect_less_often

    settings = _settings()
    engine = _engine(settings)
    collect_less_often()
    with JsonLinesWriter(alerts_out) as writer, JsonLinesWriter(quarantine_out or Path(os.devnull)) as quarantine:
        report = run_replay(_progress(events, read_lines(events)), engine, writer.write, quarantine.write)
    for number, reason in report.rejected[:20]:
        err.print(f"{events}:{number}: {reason}", highlight=False, markup=False)
    if len(report.rejected) > 20:
        err.print(f"... and {len(report.rejected) - 20} more bad lines", highlight=False)
    err.print(f"{report.events} events, {len(report.rejected)} bad lines, {report.alerts} alert revisions "
              f"written to {alerts_out}, {report.quarantined} events quarantined", highlight=False)


def _progress(path: Path, lines):  # type: ignore[no-untyped-def]
    """A progress bar over a file's lines, on a terminal only."""
    if not err.is_terminal:
        return lines
    from rich.progress import Progress

    progress = Progress(console=err, transient=True)

    def tracked():  # type: ignore[no-untyped-def]
        with progress:
            task = progress.add_task("replaying", total=path.stat().st_size)
            for number, raw in lines:
                progress.advance(task, len(raw) + 1)
                yield number, raw

    return tracked()


@app.command()
def simulate(
    scenario: Annotated[Optional[list[str]], typer.Option(help="Attack scenario to mix in; repeatable.")] = None,
    minutes: int = 30,
    seed: int = 7,
    principals: int = 40,
    start: Annotated[Optional[datetime], typer.Option(help="First event time (UTC); default: minutes ago.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write JSON lines here instead of Kafka.")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="Write the ground truth (JSON) here.")] = None,
) -> None:
    """Generate benign traffic with attack scenarios, to a file or to the Kafka topics."""
    from datetime import timezone

    from connectors.files import JsonLinesWriter
    from connectors.kafka import ensure_topics, publish_events
    from modelsiem.scenarios import SCENARIOS, simulate as run_simulate

    chosen = scenario if scenario is not None else list(SCENARIOS)
    try:
        trace = run_simulate(chosen, minutes=minutes, seed=seed, principals=principals,
                             start=start.replace(tzinfo=timezone.utc) if start else None)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    events = trace.sorted_events()
    if out_file:
        with JsonLinesWriter(out_file) as writer:
            writer.write_all(events)
        where = str(out_file)
    else:
        settings = _settings()
        ensure_topics(settings)
        publish_events(settings, events)
        where = f"{settings.topics.inference} and {settings.topics.feedback}"
    if truth:
        truth.write_text(json.dumps([t.model_dump() for t in trace.truth], indent=2))
    err.print(f"{len(events)} events ({', '.join(chosen) or 'benign only'}) written to {where}", highlight=False)


@app.command()
def evaluate(
    trace: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Labelled JSON-lines trace.")],
    truth: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Its ground truth (from simulate --truth).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
    html: Annotated[Path | None, typer.Option(dir_okay=False, help="Also write an HTML report with a timeline "
                                              "per scenario to this file.")] = None,
) -> None:
    """Backtest: replay a labelled trace and report, per attack, what the detectors caught."""
    from pydantic import TypeAdapter

    from connectors.files import read_lines
    from modelsiem.evaluate import evaluate as run_evaluate
    from modelsiem.scenarios import Truth
    from stream.runtime import collect_less_often

    settings = _settings()
    entries = TypeAdapter(list[Truth]).validate_json(truth.read_bytes())
    collect_less_often()
    result = run_evaluate(_progress(trace, read_lines(trace)), entries, _engine(settings))
    if html is not None:
        from modelsiem.report import html_report

        html.write_text(html_report(result, trace.name), encoding="utf-8")
        err.print(f"report written to {html}", highlight=False)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    table = Table("attack", "ATLAS", "detected", "events before alert", "alerts", "max severity",
                  "accounts named", "named outside", "quarantined", title=f"{trace.name}")
    for a in result.attacks:
        table.add_row(a.scenario, a.technique or "", "yes" if a.detected else "NO",
                      f"{a.events_before_alert} of {a.attack_events}" if a.detected else f"- of {a.attack_events}",
                      str(a.alerts), a.max_severity or "", f"{a.accounts_named}/{a.accounts_involved}",
                      str(a.named_outside_attack), f"{a.quarantined}/{a.feedback_events}" if a.feedback_events else "")
    out.print(table)
    for b in result.benign:
        out.print(f"benign {b.scenario}: {b.events} events, {b.alerts} alerts"
                  + (f", up to {b.max_severity}" if b.max_severity else ""), highlight=False)
    out.print(f"{result.events} events ({result.benign_events} benign), {result.alert_ids} alerts, "
              f"{result.false_alerts} false: {result.false_alerts_per_million:.2f} per million benign events; "
              f"{result.quarantined_benign} benign events quarantined", highlight=False)


@app.command()
def alerts(
    limit: int = 20,
    since: Annotated[Optional[str], typer.Option(help="Only alerts raised or revised since this time (ISO 8601).")] = None,
) -> None:
    """Show the newest alerts in Elasticsearch, each at its latest revision."""
    from connectors.elasticsearch_sink import client

    settings = _settings()
    es = client(settings.elasticsearch)
    index = settings.elasticsearch.latest_index or settings.elasticsearch.data_stream
    if not es.indices.exists(index=index):
        raise _fail(f"no alerts yet: {index} does not exist")
    es.indices.refresh(index=index)
    filters: list[dict[str, object]] = [{"term": {"event.kind": "alert"}}]
    if since:
        filters.append({"range": {"event.created": {"gte": since}}})
    hits = es.search(index=index, size=limit, sort=[{"@timestamp": "desc"}],
                     query={"bool": {"filter": filters}})["hits"]
    out.print(f"{hits['total']['value']} alerts in {index}" + (f" raised or revised since {since}" if since else ""),
              highlight=False)
    for hit in hits["hits"]:
        doc = hit["_source"]
        m = doc["modelsiem"]
        technique = doc["threat"]["technique"]
        atlas = technique.get("subtechnique", technique)["id"][0]
        out.print(f"\n{doc['@timestamp']}  {m['alert']['severity']:<8} {doc['rule']['id']:<16} {atlas:<14} "
                  f"revision {m['alert']['revision']}, {len(doc['related']['user'])} accounts named",
                  highlight=False, markup=False)
        out.print(f"  {doc['message']}", highlight=False, markup=False, soft_wrap=True)


def _print_figures(result: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        out.print(f"{key:34} {value}", highlight=False)


@app.command()
def bench(
    events: int = 1_000_000,
    latency_seconds: float = 30.0,
    workers: Annotated[int, typer.Option(min=1, help="Also time this many workers sharing the same events.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Benchmark the stream processor on the local stack: bare consumer, no-op agent, full pipeline."""
    from modelsiem.bench_pipeline import bench as run

    result = run(_settings(), events=events, latency_seconds=latency_seconds, workers=workers)
    _print_figures(result, as_json)


@app.command("bench-detectors")
def bench_detectors(
    events: int = 200_000,
    seed: int = 1,
    batch: Annotated[int, typer.Option(min=1, help="Events applied as one engine batch (1: one by one).")] = 500,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Benchmark the detectors alone: replay of a mixed trace in one process, no servers."""
    from modelsiem.bench_detectors import bench_detectors as run
    from stream.runtime import collect_less_often

    collect_less_often()  # as replay and the worker do
    result = run(events, seed, batch)
    _print_figures(result, as_json)


@app.command("bench-memory")
def bench_memory(
    events: int = 1_000_000,
    max_keys: Annotated[Optional[int], typer.Option(help="Live keys per detector and partition; default the setting.")] = None,
    partitions: Annotated[Optional[int], typer.Option(help="Partitions the keys spread over; default the setting.")] = None,
    per_detector_events: int = 100_000,
    seed: int = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Benchmark the detectors' memory under a flood of never-seen principals: RSS, live keys, bytes per key."""
    from modelsiem.bench_memory import bench_memory as run

    settings = Settings()
    result = run(events, max_keys or settings.max_keys, partitions or settings.topics.partitions, per_detector_events, seed)
    _print_figures(result, as_json)


@app.command("bench-sink")
def bench_sink(docs: int = 50_000, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Benchmark the Elasticsearch sink against a plain streaming_bulk loop (needs the stack)."""
    from modelsiem.bench_sink import bench_sink as run

    result = run(_settings(), docs)
    _print_figures(result, as_json)


@app.command()
def demo(timeout: float = 180.0) -> None:
    """Stack up, worker and sink, a simulated attack, then the alerts that reached Elasticsearch."""
    from modelsiem.demo import run_demo

    settings = _settings()
    try:
        started = run_demo(settings, err, timeout)
    except RuntimeError as exc:
        raise _fail(str(exc)) from None
    alerts(limit=20, since=started)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
