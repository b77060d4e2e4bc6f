"""A local Kafka + Elasticsearch for development and the integration tests.

Both servers run on loopback as plain JVM processes (no Docker): Kafka in
KRaft mode from Maven Central jars, Elasticsearch from its integ-test zip.
Downloads, config, data and logs live under ``settings.stack.dir``; data
survives ``down``/``up``. The three calls below are what ``modelsiem stack``
uses; ``python -m modelsiem.stack up|down|status`` does the same for debugging.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..settings import Settings
from .base import Server, ensure_dir, loopback_endpoint
from .elasticsearch import Elasticsearch, parse_url
from .errors import StackError
from .java import find_java_home
from .kafka import Kafka, parse_bootstrap
from .process import (
    finish_stop,
    port_open,
    port_owner,
    request_stop,
    running_pid,
    tail,
    wait_ready,
)

__all__ = ["StackError", "down", "status", "up"]


def servers(settings: Settings) -> list[Server]:
    """Kafka and Elasticsearch as configured, bound where the clients look."""
    root = settings.stack.dir
    k_host, k_port = parse_bootstrap(settings.kafka.bootstrap)
    e_host, e_port = parse_url(settings.elasticsearch.url)
    return [
        Kafka(
            root / "kafka",
            *loopback_endpoint(k_host, k_port, "kafka.bootstrap", 9092),
            version=settings.stack.kafka_version,
            heap=settings.stack.kafka_heap,
        ),
        Elasticsearch(
            root / "elasticsearch",
            *loopback_endpoint(e_host, e_port, "elasticsearch.url", 9200),
            version=settings.stack.elasticsearch_version,
            heap=settings.stack.elasticsearch_heap,
            user=settings.stack.es_user,
        ),
    ]


def _chosen(settings: Settings, only: str | None) -> list[Server]:
    chosen = [s for s in servers(settings) if only in (None, s.name)]
    if not chosen:
        raise StackError(f"no server named {only!r}; there are kafka and elasticsearch")
    return chosen


def up(settings: Settings, *, only: str | None = None, echo: Callable[[str], None] = print) -> None:
    """Start whatever is not running (of both, or ``only`` one) and wait until it is healthy."""
    ensure_dir(settings.stack.dir)
    to_start: list[Server] = []
    starting: list[tuple[Server, int, float]] = []
    for server in _chosen(settings, only):
        pid = running_pid(server.managed)
        if pid is None:
            to_start.append(server)
        elif server.healthy():
            echo(f"{server.name}: already running (pid {pid}) on {server.address}")
        else:
            echo(f"{server.name}: already starting (pid {pid}), waiting...")
            starting.append((server, pid, time.monotonic()))
    # Refuse before starting anything: ports taken, no suitable JDK.
    for server in to_start:
        _check_ports_free(server)
    java_homes = [find_java_home(server.java_modules) for server in to_start]
    for server, java_home in zip(to_start, java_homes, strict=True):
        server.prepare(java_home, echo)
        pid = server.launch(java_home)
        echo(f"{server.name}: started (pid {pid}), logs in {server.log_dir}")
        starting.append((server, pid, time.monotonic()))
    for server, pid, started in starting:
        _wait_healthy(server, pid, started)
        echo(f"{server.name}: healthy on {server.address} after {time.monotonic() - started:.0f} s")


def down(settings: Settings, *, only: str | None = None, echo: Callable[[str], None] = print) -> None:
    """Stop both servers, or ``only`` one (SIGTERM, then SIGKILL after 30 s). Fine if not running."""
    stopping = []
    for server in _chosen(settings, only):
        pgid = request_stop(server.managed)
        if pgid is None:
            echo(f"{server.name}: not running")
        else:
            echo(f"{server.name}: stopping (pid {pgid})...")
            stopping.append((server, pgid))
    for server, pgid in stopping:  # both shut down in parallel
        clean = finish_stop(server.managed, pgid)
        echo(f"{server.name}: stopped" + ("" if clean else " (killed after 30 s)"))


def status(settings: Settings) -> dict[str, str]:
    """One line per server: ``running (pid N) on host:port`` or ``stopped``."""
    result = {}
    for server in servers(settings):
        pid = running_pid(server.managed)
        if pid is None:
            other = port_open(server.host, server.port)
            result[server.name] = "stopped" + (
                f" ({server.address} is in use by another program)" if other else ""
            )
        elif port_open(server.host, server.port):
            result[server.name] = f"running (pid {pid}) on {server.address}"
        else:
            result[server.name] = f"starting (pid {pid}), {server.address} not answering yet"
    return result


def _check_ports_free(server: Server) -> None:
    for port in server.ports:
        if port_open(server.host, port):
            owner = port_owner(port) or "a program not started by modelsiem"
            raise StackError(
                f"cannot start {server.name}: {server.host}:{port} is already in use by {owner}; "
                f"stop it first"
            )


def _wait_healthy(server: Server, pid: int, started: float) -> None:
    remaining = server.startup_timeout - (time.monotonic() - started)
    problem = wait_ready(
        server.healthy,
        alive=lambda: running_pid(server.managed) == pid,
        timeout=max(remaining, 1.0),
    )
    if problem is None:
        return
    found = tail(server.console_log, 3, errors_only=True) + tail(
        server.main_log, 3, errors_only=True
    )
    lines = [line[:300] for line in found]
    raise StackError(
        f"{server.name} {problem}; see {server.main_log} and {server.console_log}. "
        f"Last lines: " + " | ".join(lines)
    )
