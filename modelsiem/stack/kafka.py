"""A single-node KRaft Kafka broker built from Maven Central jars.

The broker jars are resolved with ``mvn`` from a small pom shipped as package
data (``kafka-pom.xml``), so no Apache mirror or Docker image is needed. The
node runs in combined mode (broker and controller in one JVM) with a static
one-voter quorum; storage is formatted once and kept across restarts.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template

from .base import Echo, Server, ensure_dir
from .errors import StackError
from .maven import copy_dependencies
from .process import port_open, start_detached

# The log4j2 release Kafka 4.1 ships with; its slf4j 1.x binding is not a
# dependency of the kafka_2.13 artifact, so the pom adds it.
LOG4J_VERSION = "2.24.3"


def parse_bootstrap(bootstrap: str) -> tuple[str | None, int | None]:
    """(host, port) of the first bootstrap server, e.g. ``"127.0.0.1:9092"``."""
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, sep, port = first.rpartition(":")
    if not sep:
        return first or None, None
    return host.strip("[]") or None, int(port) if port.isdigit() else None


def render_pom(kafka_version: str) -> str:
    template = resources.files(__package__).joinpath("kafka-pom.xml").read_text()
    return Template(template).substitute(kafka_version=kafka_version, log4j_version=LOG4J_VERSION)


def render_server_properties(host: str, port: int, controller_port: int, data_dir: Path) -> str:
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        # One broker: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests join consumer groups constantly; do not wait 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
    }
    body = "\n".join(f"{key}={value}" for key, value in lines.items())
    return f"# Written by modelsiem.stack on every `up`; edits are overwritten.\n{body}\n"


def render_log4j2(log_dir: Path) -> str:
    """Everything to a size-capped server.log; warnings also to the console log."""
    pattern = "[%d] %p %m (%c)%n"
    return f"""\
# Written by modelsiem.stack on every `up`.
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = {pattern}
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = {log_dir}/server.log
appender.server.filePattern = {log_dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = {pattern}
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 20MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 5
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def new_cluster_id() -> str:
    """A random Kafka Uuid: 16 bytes, URL-safe base64 without padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return cid


def java_command(
    java_home: Path, heap: str, libs: Path, main: Sequence[str], flags: Sequence[str] = ()
) -> list[str]:
    """``java`` with the broker classpath running ``main`` (class and args)."""
    return [
        str(java_home / "bin" / "java"),
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *flags,
        "-cp",
        f"{libs}/*",  # expanded by the JVM, not a shell
        *main,
    ]


class Kafka(Server):
    name = "kafka"
    startup_timeout = 120.0

    def __init__(self, root: Path, host: str, port: int, version: str, heap: str) -> None:
        super().__init__(root, host, port)
        self.version = version
        self.heap = heap
        self.controller_port = port + 1

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def libs(self) -> Path:
        return self.root / f"libs-{self.version}"

    @property
    def config(self) -> Path:
        return self.root / "config" / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def main_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "kafka.out"

    def prepare(self, java_home: Path, echo: Echo) -> None:
        ensure_dir(self.root)
        if not self.libs.is_dir():
            echo(f"fetching Kafka {self.version} jars from Maven Central (once)...")
            pom = self.root / f"pom-{self.version}.xml"
            pom.write_text(render_pom(self.version))
            copy_dependencies(pom, self.libs)
        ensure_dir(self.config.parent)
        ensure_dir(self.log_dir)
        self.config.write_text(
            render_server_properties(self.host, self.port, self.controller_port, self.data_dir)
        )
        (self.config.parent / "log4j2.properties").write_text(render_log4j2(self.log_dir))
        if not (self.data_dir / "meta.properties").exists():
            echo("formatting Kafka storage (first start)...")
            self._format(java_home)

    def _format(self, java_home: Path) -> None:
        main = [
            "kafka.tools.StorageTool", "format",
            "--cluster-id", new_cluster_id(),
            "--config", str(self.config),
            "--ignore-formatted",
        ]  # fmt: skip
        cmd = java_command(java_home, "256m", self.libs, main)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            detail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-3:])
            raise StackError(f"formatting Kafka storage in {self.data_dir} failed: {detail}")

    def launch(self, java_home: Path) -> int:
        flags = [
            f"-Dlog4j2.configurationFile={self.config.parent / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
        ]
        cmd = java_command(
            java_home, self.heap, self.libs, ["kafka.Kafka", str(self.config)], flags
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "JAVA_TOOL"))}
        return start_detached(self.managed, cmd, log=self.console_log, env=env, cwd=self.root)

    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        from confluent_kafka import TopicPartition  # heavy import, only when needed
        from confluent_kafka.admin import AdminClient, OffsetSpec

        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=5)
            if not metadata.brokers:
                return False
            # Leaders in the metadata are not enough: after a restart the broker answers
            # NOT_LEADER for its partitions until it has loaded their logs.
            tps = [TopicPartition(t.topic, p) for t in metadata.topics.values() for p in t.partitions]
            if tps:
                for future in admin.list_offsets({tp: OffsetSpec.latest() for tp in tps},
                                                 request_timeout=10).values():
                    future.result()
        except Exception:  # KafkaException while the broker is still electing itself or loading logs
            return False
        return True
