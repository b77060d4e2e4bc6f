"""Routed messages carry each event's source position, in the batched format and in the older one."""

from __future__ import annotations

import orjson

from stream.app import _routed
from stream.engine import Position
from stream.skipped import Raw


def test_a_batched_routed_message_yields_its_events_with_their_source_positions():
    body = orjson.dumps([["events", 1, 41, '{"a": 1}'], ["events", 0, 7, '{"b": "\\u00e9"}']])
    got = _routed(Raw("app-route-model", 3, 900, b"k", body))
    assert got == [(Position("events", 1, 41), b'{"a": 1}'), (Position("events", 0, 7), '{"b": "\\u00e9"}'.encode())]


def test_a_single_event_from_an_older_worker_uses_its_source_header_or_its_own_position():
    with_header = Raw("route", 2, 5, None, b'{"a": 1}', [("modelsiem.source", b"events\x1f1\x1f99")])
    assert _routed(with_header) == [(Position("events", 1, 99), b'{"a": 1}')]
    assert _routed(Raw("route", 2, 5, None, b'{"a": 1}')) == [(Position("route", 2, 5), b'{"a": 1}')]
