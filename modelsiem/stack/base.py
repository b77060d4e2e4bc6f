"""What the stack needs to know about each server.

``up``/``down``/``status`` treat Kafka and Elasticsearch alike: fetch and
configure, launch detached, poll a health check, stop the process group.
Subclasses fill in the server-specific parts.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from .errors import StackError
from .process import Managed

LOOPBACK = {"127.0.0.1", "localhost"}
Echo = Callable[[str], None]


def loopback_endpoint(
    host: str | None, port: int | None, what: str, default_port: int
) -> tuple[str, int]:
    """(host, port) the local server should bind, from the client settings.

    The stack only serves loopback; settings that point elsewhere mean the
    user wants a real cluster, and starting a local one would be a mistake.
    """
    if not host or host not in LOOPBACK:
        raise StackError(
            f"{what} points at {host}, not 127.0.0.1: the local stack only serves loopback "
            f"(unset the setting to use it)"
        )
    return "127.0.0.1", port or default_port


def ensure_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None


def unreachable_ancestor(path: Path, mode_of: Callable[[Path], int | None] = _mode) -> Path | None:
    """The first directory on the way to ``path`` that other users cannot
    enter (no ``o+x``), if any; missing directories are created 0755 later."""
    for parent in [*reversed(path.parents), path]:
        mode = mode_of(parent)
        if mode is not None and not mode & 0o001:
            return parent
    return None


class Server(ABC):
    """One server of the stack."""

    name: str
    startup_timeout: float = 180.0
    java_modules: frozenset[str] = frozenset()  # JDK modules the server needs

    def __init__(self, root: Path, host: str, port: int) -> None:
        self.root = root  # this server's directory under the stack dir
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def managed(self) -> Managed:
        return Managed(
            name=self.name,
            pid_file=self.root / f"{self.name}.pid",
            marker=str(self.root) + os.sep,
        )

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    @abstractmethod
    def ports(self) -> list[int]:
        """Every port the server binds on loopback."""

    @property
    @abstractmethod
    def main_log(self) -> Path:
        """The log to read first when startup fails."""

    @property
    @abstractmethod
    def console_log(self) -> Path:
        """Where the process's stdout and stderr go."""

    @abstractmethod
    def prepare(self, java_home: Path, echo: Echo) -> None:
        """Fetch, install and configure; must be cheap when already done."""

    @abstractmethod
    def launch(self, java_home: Path) -> int:
        """Start the server detached; returns the pid written to the pid file."""

    @abstractmethod
    def healthy(self) -> bool:
        """Whether the server answers client requests now."""
