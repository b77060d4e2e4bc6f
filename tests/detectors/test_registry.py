from __future__ import annotations

from dataclasses import dataclass

import pytest

from detectors import registry
from detectors.feedback_surge import FeedbackSurgeDetector
from detectors.query_rate import QueryRateDetector


@dataclass
class FakeEntryPoint:
    name: str
    target: object
    value: str = "plugin.module:Thing"

    def load(self) -> object:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


def _plugins(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    monkeypatch.setattr(registry, "entry_points", lambda group: list(eps) if group == registry.GROUP else [])


def test_plugins_are_found_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("query_rate", QueryRateDetector))
    assert registry.available() == {"query_rate": QueryRateDetector}


def test_duplicate_ids_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("query_rate", QueryRateDetector), FakeEntryPoint("query_rate", QueryRateDetector))
    with pytest.raises(registry.DetectorConfigError, match="two detector plugins"):
        registry.available()


def test_entry_point_name_must_match_id(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("rate", QueryRateDetector))
    with pytest.raises(registry.DetectorConfigError, match="must match"):
        registry.available()


@pytest.mark.parametrize("target", [object, ImportError("no module named x")])
def test_broken_plugins_name_themselves(monkeypatch: pytest.MonkeyPatch, target: object) -> None:
    _plugins(monkeypatch, FakeEntryPoint("broken", target))
    with pytest.raises(registry.DetectorConfigError, match="'broken'"):
        registry.available()


def test_build_enables_and_configures() -> None:
    classes = {"query_rate": QueryRateDetector, "feedback_surge": FeedbackSurgeDetector}
    built = registry.build(["query_rate"], {"query_rate": {"min_rate": 42}}, classes)
    assert [type(d) for d in built] == [QueryRateDetector]
    assert built[0].params.min_rate == 42
    assert len(registry.build((), None, classes)) == 2


@pytest.mark.parametrize(
    ("enabled", "params", "message"),
    [
        (["nope"], {}, "unknown detector"),
        ([], {"nope": {}}, "unknown detector"),
        (["query_rate"], {"query_rate": {"min_rate": -1}}, "bad parameters"),
        (["query_rate"], {"query_rate": {"typo": 1}}, "bad parameters"),
    ],
)
def test_build_rejects_bad_configuration(enabled: list[str], params: dict, message: str) -> None:
    with pytest.raises(registry.DetectorConfigError, match=message):
        registry.build(enabled, params, {"query_rate": QueryRateDetector})
