"""Detached server processes tracked by pid files.

Each server is started in a new session, so it survives the CLI that started
it and forms its own process group: stopping the group also stops children
(the Elasticsearch launcher forks the real server JVM). A pid file is trusted
only while a process in that group still names the service in
``/proc/PID/cmdline``, because pids get reused after a crash or a reboot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError

PROC = Path("/proc")


@dataclass(frozen=True)
class Managed:
    """How to recognise one server's processes."""

    name: str
    # Holds the id of the process group we started (the leader's pid).
    pid_file: Path
    # Appears in the command line of every process of the service (a path
    # under the stack dir, so another Kafka on the machine never matches).
    marker: str


# --- inspecting processes -------------------------------------------------


def cmdline(pid: int, proc: Path = PROC) -> str | None:
    """The command line of a live process, or None (gone, or a zombie)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    if not raw:  # zombies and kernel threads have an empty cmdline
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(pid_file: Path, pid: int) -> None:
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def _reap(pid: int) -> None:
    # If we are the parent (up and down in one Python process), collect the
    # exit status so the child does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def running_pid(service: Managed, proc: Path = PROC) -> int | None:
    """The process group id from the pid file while any process of the
    service lives in that group; a stale pid file is removed.

    The group, not just the leader, counts: if the Elasticsearch launcher
    dies, the server JVM it forked keeps serving and must still be stopped.
    """
    pgid = read_pid(service.pid_file)
    if pgid is None:
        return None
    _reap(pgid)
    if group_members(service, pgid, proc):
        return pgid
    service.pid_file.unlink(missing_ok=True)
    return None


def _pgid(pid: int, proc: Path) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    # "pid (comm) state ppid pgrp ..." - comm may contain spaces and parens.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[2]) if fields[0] != "Z" else None


def group_members(service: Managed, pgid: int, proc: Path = PROC) -> list[int]:
    """Live processes of ``service`` in process group ``pgid``."""
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _pgid(pid, proc) != pgid:
            continue
        cmd = cmdline(pid, proc)
        if cmd is not None and service.marker in cmd:
            members.append(pid)
    return members


# --- starting and stopping ------------------------------------------------


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to drop to (Elasticsearch refuses root)."""

    uid: int
    gid: int


def start_detached(
    service: Managed,
    cmd: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
    run_as: RunAs | None = None,
) -> int:
    """Start ``cmd`` in its own session, output appended to ``log``; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service.name}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    write_pid(service.pid_file, proc.pid)
    return proc.pid


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_gone(service: Managed, pgid: int, timeout: float, proc: Path) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(pgid)
        if not group_members(service, pgid, proc):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def request_stop(service: Managed, proc: Path = PROC) -> int | None:
    """Send SIGTERM to the service's process group; returns the group id if
    anything of ours was running."""
    pgid = running_pid(service, proc)
    if pgid is None:
        return None
    _signal_group(pgid, signal.SIGTERM)
    return pgid


def finish_stop(service: Managed, pgid: int, *, grace: float = 30.0, proc: Path = PROC) -> bool:
    """Wait for a stop requested with :func:`request_stop`, SIGKILL after
    ``grace`` seconds. Returns False if it had to be killed."""
    clean = _wait_gone(service, pgid, grace, proc)
    if not clean:
        _signal_group(pgid, signal.SIGKILL)
        if not _wait_gone(service, pgid, 10.0, proc):
            left = group_members(service, pgid, proc)
            raise StackError(
                f"{service.name} processes {left} survived SIGKILL; check `ps -p {left[0]}`"
            )
    service.pid_file.unlink(missing_ok=True)
    return clean


# --- ports and readiness --------------------------------------------------


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    return inodes


def port_owner(port: int, proc: Path = PROC) -> str | None:
    """Best effort "pid N (command)" of the process listening on ``port``."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    cmd = " ".join((cmdline(int(entry.name), proc) or "?").split())
                    return f"pid {entry.name} ({cmd[:80]})"
            except OSError:
                continue
    return None


def wait_ready(
    check: Callable[[], bool],
    *,
    alive: Callable[[], bool],
    timeout: float,
    interval: float = 1.0,
) -> str | None:
    """Poll ``check`` until it passes. None when ready, else why not."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return None
        if not alive():
            return "exited during startup"
        if time.monotonic() >= deadline:
            return f"not healthy after {timeout:.0f} s"
        time.sleep(interval)


ERROR_WORDS = ("ERROR", "FATAL", "Exception", "Error", "error:")


def tail(path: Path, lines: int = 5, errors_only: bool = False) -> list[str]:
    """Last non-empty lines of a log file (empty if missing); with
    ``errors_only``, the last lines that look like errors, if there are any."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    if errors_only:
        kept = [line for line in kept if any(w in line for w in ERROR_WORDS)] or kept
    return kept[-lines:]
