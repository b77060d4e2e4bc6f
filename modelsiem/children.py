"""Child processes that the demo and the benchmarks start, stopped together."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


def stop(procs: Sequence[subprocess.Popen], grace: float = 30.0) -> None:
    """Ask every process to stop (SIGTERM) at once, then kill each one still running after ``grace`` seconds."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
