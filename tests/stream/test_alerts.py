"""Alert documents: ECS conformance (against ../shared/ecs), the alert schema, hostile strings."""

from __future__ import annotations

import pytest

from stream.alerts import clean, quote
from tests.ecs_check import assert_ecs_alert


def test_alerts_conform_to_ecs_and_the_alert_schema(example_alerts, ecs_fields, ecs_allowed) -> None:
    for alert in example_alerts:
        assert_ecs_alert(alert, ecs_fields, ecs_allowed)


def test_timestamp_is_event_time_and_created_is_wall_clock(example_alerts) -> None:
    for alert in example_alerts:
        assert alert["@timestamp"].startswith("2026-01-01T")  # the examples' event time
        assert alert["@timestamp"] == alert["event"]["end"]
        assert alert["event"]["created"] > "2026-01-01T01"


def test_single_principal_subjects_fill_user_name(example_alerts) -> None:
    by_rule = {a["rule"]["id"]: a for a in example_alerts}
    assert by_rule["query_rate"]["user"]["name"] == "key-1"
    assert "user" not in by_rule["feedback_surge"]
    assert by_rule["feedback_surge"]["related"]["hash"] == ["fp-1"]
    assert len(by_rule["feedback_surge"]["related"]["user"]) >= 10


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("a\nb\r\tc", "abc"),
        ("\x1b]0;pwned\x07x", "]0;pwnedx"),
        ("rtl\u202eoverride\u200b", "rtloverride"),
        ("x" * 300, "x" * 255 + "…"),
    ],
)
def test_clean(raw: str, expected: str) -> None:
    assert clean(raw) == expected


def test_quote_cannot_break_out_of_its_quotes() -> None:
    assert quote("it's") == "'it’s'"
    assert len(quote("y" * 500)) == 66
