"""Routed messages: how the worker carries events to the partition of another key, and reads them back.

A routed message is a JSON array of items ``[source topic, partition, offset, kind, event]``: where the
event first entered Kafka (all null for a signal, which never did), its kind (``digest`` for the digest
of an event, see ``stream.digests``), and the event's JSON as it arrived (less whitespace around it),
embedded as a value rather than quoted as a string, so that neither side escapes or unescapes it. The
route agent checks the envelope, then decodes each event as the ingest agent did.

Route topics are internal, but anyone allowed to write to them can: a message of another shape is
rejected with a reason (and dead-lettered), never allowed to stop the agent. Two older forms are still
read, for messages in flight while workers are upgraded: the event as a JSON string in the item, and one
event per message (its source position in a header, or none).

>>> from stream.skipped import Raw
>>> message, = routed_messages([routed_item(Position("events", 1, 41), "inference", b'{"a": 1}')], 1024)
>>> message
b'[["events",1,41,"inference",{"a": 1}]]'
>>> unpack(Raw("app-route-prefix", 0, 7, None, message))
[(Position(topic='events', partition=1, offset=41), 'inference', b'{"a": 1}')]
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated

import msgspec
import orjson
from aiokafka.partitioner import murmur2

from stream.decode import Rejected, RoutedKind
from stream.engine import Located, Position
from stream.skipped import Message, Raw

SOURCE_HEADER = "modelsiem.source"  # header of a routed event from older workers: where it first entered Kafka

_Offset = Annotated[int, msgspec.Meta(ge=0)]
_Item = tuple[str | None, _Offset | None, _Offset | None, RoutedKind, msgspec.Raw]
_MESSAGE = msgspec.json.Decoder(list[_Item])
_TEXT = msgspec.json.Decoder(str)
_ITEM_AT = re.compile(r"at `\$\[(\d+)\]")
_SHAPE = "[topic, partition, offset, kind, event]"


@lru_cache(maxsize=16384)
def route_partition(key: str, partitions: int) -> int:
    """The route partition of a key, as Kafka's default partitioner picks it (murmur2), cached: keys repeat.

    The worker picks it itself so that the events of one batch bound for one partition travel as one
    message, whatever their keys: routed messages per batch are bounded by the partitions, not the keys.
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def routed_item(source: Located | None, kind: str, event: bytes) -> bytes:
    """One item of a routed message; ``event`` is JSON the decoder accepted, so it embeds as it is."""
    where = [None, None, None] if source is None else [source.topic, source.partition, source.offset]
    return orjson.dumps([*where, kind])[:-1] + b"," + event + b"]"


def routed_messages(items: list[bytes], max_bytes: int) -> list[bytes]:
    """``items`` joined into messages of at most ``max_bytes`` of items (a larger item travels alone)."""
    runs: list[list[bytes]] = [[]]
    size = 0
    for item in items:
        if runs[-1] and size + len(item) > max_bytes:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += len(item)
    return [b"[" + b",".join(run) + b"]" for run in runs if run]


def unpack(raw: Message) -> list[tuple[Position | None, RoutedKind | None, bytes]] | Rejected:
    """The events of a routed message, each with the position where it first entered Kafka (none for a
    signal) and its kind; or why the message is not a routed message."""
    value = raw.value or b""
    if raw.headers and (header := dict(raw.headers).get(SOURCE_HEADER)):
        try:
            topic, partition, offset = header.decode().split("\x1f")
            return [(Position(topic, int(partition), int(offset)), None, value)]
        except ValueError:
            return Rejected(f"malformed {SOURCE_HEADER} header of a routed message")
    if value[:1] == b"{":
        # One event per message, without a source header: where it was read is where it entered.
        return [(Position(raw.topic, raw.partition, raw.offset), None, value)]
    try:
        items = _MESSAGE.decode(value)
    except msgspec.ValidationError as exc:
        at = _ITEM_AT.search(str(exc))
        return Rejected(f"routed message item {at[1]} is not {_SHAPE}" if at else
                        f"routed message is not a list of {_SHAPE}")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return Rejected(f"routed message is not valid JSON: {exc}"[:300])
    events: list[tuple[Position | None, RoutedKind | None, bytes]] = []
    for index, (topic, partition, offset, kind, event) in enumerate(items):
        if not (topic is None) == (partition is None) == (offset is None):
            return Rejected(f"routed message item {index} is not {_SHAPE}: its position is half given")
        text = bytes(event)
        if text[:1] == b'"':  # the event as a JSON string, as workers wrote it before
            try:
                text = _TEXT.decode(text).encode()
            except (msgspec.DecodeError, UnicodeEncodeError):
                return Rejected(f"routed message item {index} holds an event text that is not valid")
        events.append((None if topic is None else Position(topic, partition, offset), kind, text))
    return events


def letter(raw: Message, source: Position | None, value: bytes) -> Raw:
    """A routed event as the dead-letter topic should show it: its own text, and where it first entered
    Kafka (a signal, which has no such place, where it was read)."""
    if source is None:
        return Raw(raw.topic, raw.partition, raw.offset, raw.key, value)
    return Raw(source.topic, source.partition, source.offset, None, value)
