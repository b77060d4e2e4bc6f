"""Configuration, read from ``MODELSIEM_*`` environment variables.

Nested fields use ``__``: ``MODELSIEM_KAFKA__BOOTSTRAP=broker:9092``,
``MODELSIEM_ELASTICSEARCH__API_KEY_FILE=/run/secrets/es``. Secrets are
``SecretStr`` so they never appear in a ``repr`` or a log line.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_stack_dir() -> Path:
    # Elasticsearch runs as an unprivileged user, which cannot enter root's
    # home: as root the stack lives where every user can reach it.
    if os.geteuid() == 0:
        return Path("/var/tmp/modelsiem-stack")
    state_home = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state"))
    return state_home / "modelsiem" / "stack"


class Topics(BaseModel):
    inference: str = "modelsiem.inference"
    feedback: str = "modelsiem.feedback"
    alerts: str = "modelsiem.alerts"
    deadletter: str = "modelsiem.deadletter"
    quarantine: str = "modelsiem.quarantine"
    partitions: int = Field(default=4, ge=1)
    replication: int = Field(default=1, ge=1)


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every confluent-kafka client."""
        conf = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        return conf


class ElasticsearchSettings(BaseModel):
    url: str = "http://127.0.0.1:9200"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    data_stream: str = "logs-modelsiem.alerts-default"
    # One document per alert at its latest revision (empty: none). Outside logs-* on purpose,
    # so that Elastic Security's rules read each revision once, from the data stream.
    latest_index: str = "modelsiem-alerts-latest"

    @model_validator(mode="after")
    def _read_secret_files(self) -> ElasticsearchSettings:
        if self.api_key_file and not self.api_key:
            self.api_key = SecretStr(self.api_key_file.read_text().strip())
        if self.password_file and not self.password:
            self.password = SecretStr(self.password_file.read_text().strip())
        return self


class SinkSettings(BaseModel):
    group: str = "modelsiem-sink"
    batch_max_docs: int = Field(default=500, ge=1)
    batch_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    batch_max_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)


class StackSettings(BaseModel):
    dir: Path = Field(default_factory=_default_stack_dir)
    kafka_version: str = "4.1.1"
    elasticsearch_version: str = "8.19.21"
    kafka_heap: str = "512m"
    elasticsearch_heap: str = "1g"
    es_user: str = "modelsiem-es"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELSIEM_", env_nested_delimiter="__")

    app_id: str = "modelsiem"
    topics: Topics = Topics()
    kafka: KafkaSettings = KafkaSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    sink: SinkSettings = SinkSettings()
    stack: StackSettings = StackSettings()
    # Detector ids to run; empty means every installed detector.
    detectors: list[str] = []
    # Per-detector parameters: {"query_rate": {"min_rate": 300}}.
    detector_params: dict[str, dict[str, object]] = {}
    # Live keys kept per detector and partition; beyond it the least recently active state is dropped.
    max_keys: int = Field(default=50_000, ge=1)
    # Seconds between the tallies a worker sends of what it folded (see stream.digests): a group's
    # detection waits at most this long, and each group's events travel as one message per interval.
    tally_interval: float = Field(default=0.5, gt=0.0, le=60.0)
    worker_dir: Path = Path(".modelsiem/worker")
    log_level: str = "INFO"


def settings_with(env: dict[str, str]) -> Settings:
    """Settings as they would be read with ``env`` added to the environment (which is left as it was)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
