"""Write-behind state: reads see pending changes, checkpoints send faust's changelog bytes in order with delivery."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
from faust.types import TP

from stream.checkpoint import CheckpointSensor, CheckpointStore


class _Memory(dict):  # type: ignore[type-arg]
    """faust's in-memory store: a mapping whose plain dict is its ``data``."""

    @property
    def data(self) -> dict[str, Any]:
        return self


class _Table:
    """What the store uses of a faust table: its data and its changelog topic's name."""

    def __init__(self, name: str) -> None:
        self.data = _Memory()
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")


def _store(max_record_bytes: int = 1024) -> tuple[CheckpointStore, list[tuple[str, int, bytes, bytes | None]]]:
    sent: list[tuple[str, int, bytes, bytes | None]] = []
    store = CheckpointStore({"rate": _Table("rate")}, {"events"}, lambda *record: sent.append(record),
                            max_record_bytes=max_record_bytes)
    return store, sent


def test_pending_changes_are_read_back_before_the_checkpoint_and_sent_by_it() -> None:
    store, sent = _store()
    store.at(1)
    store.put("rate", "m\x1fkey-1", {"state": {"n": 1}})
    assert store.get("rate", "m\x1fkey-1") == {"state": {"n": 1}}
    assert store.tables["rate"].data == {} and sent == []  # nothing written before the commit

    store.checkpoint({1})
    assert store.tables["rate"].data == {"m\x1fkey-1": {"state": {"n": 1}}}
    # Partition chosen by the store, key and value as faust's JSON codec writes them.
    assert sent == [("rate-changelog", 1, b'"m\\u001fkey-1"', b'{"state":{"n":1}}')]
    assert orjson.loads(sent[0][2]) == "m\x1fkey-1"


def test_a_deleted_key_is_a_tombstone_and_gone_from_reads() -> None:
    store, sent = _store()
    store.at(0)
    store.put("rate", "k", {"state": {}})
    store.checkpoint({0})
    store.at(0)
    store.delete("rate", "k")
    assert store.get("rate", "k") is None and list(store.items("rate")) == []
    store.checkpoint({0})
    assert sent[-1] == ("rate-changelog", 0, b'"k"', None)
    assert store.tables["rate"].data == {}


def test_changes_of_a_partition_moved_away_are_not_written() -> None:
    store, sent = _store()
    store.at(2)
    store.put("rate", "k", {"state": {}})
    store.checkpoint({0, 1})  # partition 2 now belongs to another worker, which re-applies its events
    assert sent == [] and store.tables["rate"].data == {}


def test_a_record_over_the_size_limit_is_kept_in_memory_but_not_sent(caplog: Any) -> None:
    store, sent = _store(max_record_bytes=100)
    store.at(0)
    store.put("rate", "small", {"state": {}})
    store.put("rate", "huge\n%s", {"state": {"ids": ["x" * 50] * 10}})
    store.checkpoint({0})
    assert [record[2] for record in sent] == [b'"small"']
    store.at(0)
    assert store.get("rate", "huge\n%s") == {"state": {"ids": ["x" * 50] * 10}}  # detection goes on
    assert 'key "huge\\n%s" is' in caplog.text  # the key is quoted, never a format string or a line break


def test_the_sensor_delivers_records_before_and_the_checkpoint_after_writing_state() -> None:
    store, sent = _store()
    calls: list[str] = []
    sensor = CheckpointSensor([store], deliver=lambda: calls.append(f"deliver after {len(sent)} records"))
    store.at(0)
    store.put("rate", "k", {"state": {}})
    consumer = SimpleNamespace(assignment=lambda: {TP("events", 0)})
    sensor.on_commit_initiated(consumer)
    assert calls == ["deliver after 0 records", "deliver after 1 records"]
