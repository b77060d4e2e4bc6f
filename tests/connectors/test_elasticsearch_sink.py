"""Per-item handling of bulk responses, without a server: what is retried, rejected or delivered."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from connectors.elasticsearch_sink import AlertWriter, client
from modelsiem.settings import ElasticsearchSettings, Settings
from stream.alerts import document_id


@dataclass
class FakeMessage:
    """The three methods of a confluent-kafka Message the writer uses."""

    payload: bytes
    offset_: int = 0

    def value(self) -> bytes:
        return self.payload


class ScriptedBulk:
    """Answers each bulk call with the next list of per-action statuses."""

    def __init__(self, *rounds: list[int]) -> None:
        self.rounds = list(rounds)
        self.calls: list[list[dict[str, Any]]] = []

    def bulk(self, operations: bytes) -> dict[str, Any]:
        actions = [orjson.loads(line) for line in operations.splitlines()[0::2]]
        self.calls.append(actions)
        statuses = self.rounds.pop(0)
        assert len(statuses) == len(actions)
        items = []
        for action, status in zip(actions, statuses, strict=True):
            op, meta = next(iter(action.items()))
            outcome: dict[str, Any] = {"_index": meta["_index"], "_id": meta["_id"], "status": status}
            if status >= 400:
                outcome["error"] = {"type": "mapper_parsing_exception" if status == 400 else "x", "reason": "r"}
            items.append({op: outcome})
        return {"errors": True, "items": items}


@pytest.fixture
def messages(example_alerts):
    docs = copy.deepcopy(example_alerts[:4])
    return docs, [FakeMessage(orjson.dumps(d)) for d in docs]


def test_each_action_is_retried_until_acknowledged(messages) -> None:
    docs, msgs = messages
    es = ScriptedBulk([201, 409, 429, 400], [503], [201])
    sleeps: list[float] = []
    result = AlertWriter(es, "ds", None, 1.0, sleeps.append).write(msgs)  # type: ignore[arg-type]
    assert (result.delivered, result.duplicates) == (2, 1)
    assert [m for m, _ in result.rejected] == [msgs[3]] and "mapper_parsing_exception" in result.rejected[0][1]
    # Only the 429 action is sent again, with backoff between attempts.
    assert [a["create"]["_id"] for a in es.calls[1]] == [document_id(docs[2])] == [a["create"]["_id"] for a in es.calls[2]]
    assert len(sleeps) == 2 and all(0 <= s <= 1.0 for s in sleeps)


def test_latest_index_gets_the_revision_as_external_version(messages) -> None:
    docs, msgs = messages
    es = ScriptedBulk([201, 409] * 4)
    result = AlertWriter(es, "ds", "latest", 1.0, lambda s: None).write(msgs)  # type: ignore[arg-type]
    assert result.delivered == 4 and result.duplicates == 0  # 409 on latest: a newer revision is there
    latest = [a["index"] for a in es.calls[0] if "index" in a]
    assert [(a["_id"], a["version"], a["version_type"]) for a in latest] == [
        (d["event"]["id"], d["modelsiem"]["alert"]["revision"], "external") for d in docs
    ]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update({"surprise_field": 1}), "surprise_field"),
        (lambda d: d["event"].update({"kind": "event"}), "event.kind"),
        (lambda d: d.pop("rule"), "rule"),
    ],
)
def test_documents_that_are_not_alerts_are_rejected_before_indexing(messages, mutate, reason) -> None:
    docs, _ = messages
    doc = copy.deepcopy(docs[0])
    mutate(doc)
    es = ScriptedBulk()
    result = AlertWriter(es, "ds", None, 1.0, lambda s: None).write([FakeMessage(orjson.dumps(doc))])  # type: ignore[arg-type]
    assert es.calls == [] and reason in result.rejected[0][1]


def test_secrets_never_show_in_settings_output(tmp_path, monkeypatch) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("c2VjcmV0LWtleQ==\n")
    monkeypatch.setenv("MODELSIEM_ELASTICSEARCH__API_KEY_FILE", str(key_file))
    monkeypatch.setenv("MODELSIEM_KAFKA__SASL_PASSWORD", "hunter2")
    settings = Settings()
    assert settings.elasticsearch.api_key.get_secret_value() == "c2VjcmV0LWtleQ=="
    assert "c2VjcmV0" not in repr(settings) and "hunter2" not in repr(settings)
    assert client(settings.elasticsearch)  # builds with the key


@pytest.mark.parametrize(
    ("settings", "scheme"),
    [(ElasticsearchSettings(username="u", password="p"), "Basic"), (ElasticsearchSettings(api_key="k"), "ApiKey")],
)
def test_credentials_reach_the_client(settings: ElasticsearchSettings, scheme: str) -> None:
    es = client(settings)
    assert es._headers["authorization"].startswith(scheme)
    assert "<hidden>" in repr(es._headers)  # the client masks it in its own output
