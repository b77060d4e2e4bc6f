"""docker-compose.yml stays in step with the defaults of `modelsiem stack up` and the settings."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from modelsiem.settings import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DEFAULTS = Settings()


def test_services() -> None:
    assert set(COMPOSE["services"]) == {"kafka", "elasticsearch", "kibana", "worker", "sink"}


def test_versions_match_the_local_stack() -> None:
    services = COMPOSE["services"]
    assert services["kafka"]["image"].endswith(f":{DEFAULTS.stack.kafka_version}")
    assert services["elasticsearch"]["image"].endswith(f":{DEFAULTS.stack.elasticsearch_version}")
    assert services["kibana"]["image"].endswith(f":{DEFAULTS.stack.elasticsearch_version}")


def test_ports_match_the_default_endpoints() -> None:
    host, port = DEFAULTS.kafka.bootstrap.split(":")
    assert f"{host}:{port}:9092" in COMPOSE["services"]["kafka"]["ports"]
    assert COMPOSE["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].startswith(f"HOST://{host}:{port}")
    es_host_port = DEFAULTS.elasticsearch.url.removeprefix("http://")
    assert f"{es_host_port}:9200" in COMPOSE["services"]["elasticsearch"]["ports"]


def test_worker_and_sink_use_the_default_topics() -> None:
    for name in ("worker", "sink"):
        env = COMPOSE["services"][name]["environment"]
        for topic in ("inference", "feedback", "alerts", "deadletter"):
            assert env[f"MODELSIEM_TOPICS__{topic.upper()}"] == getattr(DEFAULTS.topics, topic)
        assert all(key.split("__")[0].removeprefix("MODELSIEM_").lower() in Settings.model_fields for key in env)


def _compose_cli() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no Docker Compose CLI on this machine (scripts/compose-cli installs one; make test runs it)")
def test_docker_compose_config_accepts_the_file() -> None:
    cmd = _compose_cli()
    assert cmd is not None
    result = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
