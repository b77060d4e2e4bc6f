"""Fetching server artifacts from Maven Central with the ``mvn`` client.

Maven Central is reachable where Docker Hub and the Apache/Elastic download
sites may not be, and ``mvn`` keeps its own cache in ``~/.m2``. Every fetch
lands in a temporary directory that is renamed into place only when complete,
so an interrupted download is never mistaken for a finished one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import StackError

MVN_TIMEOUT = 1800  # seconds; a cold ~/.m2 pulls ~150 MB


def find_mvn() -> str:
    """Path of ``mvn``, or a StackError saying how to get it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("mvn not found: install Maven (apt-get install maven) and retry")
    return mvn


def _run(args: list[str], what: str, cwd: Path) -> None:
    try:
        out = subprocess.run(
            [find_mvn(), "-q", "-B", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=MVN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"mvn timed out fetching {what} after {MVN_TIMEOUT} s") from exc
    if out.returncode != 0:
        detail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-3:])
        raise StackError(
            f"mvn could not fetch {what} (exit {out.returncode}; "
            f"is Maven Central reachable?): {detail}"
        )


def _fresh(tmp: Path) -> Path:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def copy_dependencies(pom: Path, dest: Path) -> Path:
    """All runtime jars of ``pom`` into ``dest`` (skipped if already there)."""
    if dest.is_dir():
        return dest
    tmp = _fresh(dest.with_name(dest.name + ".partial"))
    _run(
        [
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        f"the dependencies of {pom.name}",
        cwd=pom.parent,
    )
    tmp.rename(dest)
    return dest


def copy_artifact(coordinate: str, dest: Path) -> Path:
    """One artifact (``group:artifact:version:type[:classifier]``) to the file ``dest``."""
    if dest.is_file():
        return dest
    tmp = _fresh(dest.with_name(dest.name + ".partial"))
    _run(
        ["dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={tmp}"],
        coordinate,
        cwd=tmp,  # no stray pom.xml in the caller's directory can interfere
    )
    files = list(tmp.iterdir())
    if len(files) != 1:
        raise StackError(f"mvn fetched {len(files)} files for {coordinate} into {tmp}, expected 1")
    dest.parent.mkdir(parents=True, exist_ok=True)
    files[0].rename(dest)
    tmp.rmdir()
    return dest
