"""Turn raw message bytes into a contract event, or a readable reason why not.

The reason goes to the dead-letter topic and to the operator's terminal, so it
names fields and constraints but never repeats the offending value: that value
may be an attacker's, and may be a megabyte long.

>>> decode(b'{"event_id": "e1"}', kind="inference").reason
'invalid inference event: timestamp: required'
>>> decode(b'{"kind": "inference", "event_id": "e1", "timestamp": "2026-01-01T00:00:00"}').reason
'invalid event: timestamp: Expected `datetime` with a timezone component'
>>> decode(b'not json', kind="feedback").reason
'not valid JSON: malformed: invalid character (byte 4)'

A message is checked up to its first error: the reason names that one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import msgspec

from stream.digests import Digest
from stream.events import EVENT_TYPES, MAX_MESSAGE_BYTES, FeedbackEvent, InferenceEvent
from stream.signals import Signal

Kind = Literal["inference", "feedback", "signal"]  # what decode() validates
RoutedKind = Kind | Literal["digest"]  # what a routed message may carry (digests: see digest_decoder)
# Signals (and digests, see digest_decoder) are decoded only where the kind is known (the worker's
# route topics): a message that names its own kind must be a contract event.
_DECODERS = {kind: msgspec.json.Decoder(t) for kind, t in
             {**EVENT_TYPES, "signal": Signal, None: InferenceEvent | FeedbackEvent}.items()}
_MAX_REASON = 1000
# msgspec's messages: "<what is wrong> - at `$.<path>`", or "Object missing required field `<name>`".
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`(?P<what>)$")
# The contract's own checks name the field first: "`ip`: not an IPv4 or IPv6 address".
_NAMED = re.compile(r"^`(?P<name>\w+)`: (?P<what>.*)$", re.DOTALL)
# A quoted value in a message is the sender's (an unknown kind): never repeated.
_QUOTED = re.compile(r"'.*'", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message is not a valid event."""

    reason: str


def decode(raw: bytes, kind: Kind | None = None) -> InferenceEvent | FeedbackEvent | Signal | Rejected:
    """Validate one message; ``kind`` is implied by the topic, or read from the event itself."""
    return _decode(_DECODERS[kind], raw, kind)


def digest_decoder(types: Sequence[type[Digest]]) -> Callable[[bytes], Digest | Rejected]:
    """Validation of the digests of ``types`` (a route's detectors'), each telling its type by its tag.

    >>> decoder = digest_decoder([])
    >>> decoder(b'["extraction_prefix"]').reason
    'invalid digest event: no detector of this route learns from digests'
    """
    if not types:
        return lambda raw: Rejected("invalid digest event: no detector of this route learns from digests")
    decoder = msgspec.json.Decoder(Union[tuple(types)])  # type: ignore[arg-type]
    return lambda raw: _decode(decoder, raw, "digest")


def _decode(decoder: msgspec.json.Decoder, raw: bytes, kind: str | None) -> Any:
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejected(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        event = decoder.decode(raw)
        if not raw.isascii():
            raw.decode()  # JSON is UTF-8: msgspec checks the strings it keeps, not those of fields it skips
        return event
    except msgspec.ValidationError as exc:
        return Rejected(_describe(str(exc), kind))
    except msgspec.DecodeError as exc:
        return Rejected(_bounded(f"not valid JSON: {str(exc).removeprefix('JSON is ')}"))
    except UnicodeDecodeError:
        return Rejected("not valid JSON: a string is not UTF-8")
    except RecursionError:  # arrays or objects nested past what the decoder follows, even in an unknown field
        return Rejected("not valid JSON: nested too deeply")


def _describe(message: str, kind: str | None) -> str:
    """``invalid <kind> event: <field path>: <what is wrong>``, from msgspec's message."""
    at = _AT.match(message)
    what, path = (at["what"], (at["path"] or "").lstrip(".")) if at else (message, "")
    named = _MISSING.match(what) or _NAMED.match(what)
    if named:
        path, what = ".".join(p for p in (path, named["name"]) if p), named["what"] or "required"
    what = _QUOTED.sub("a value", what)
    if path == "kind":
        what = "must be 'inference' or 'feedback'" if kind is None else f"must be '{kind}' on this topic"
    elif path == "[0]" and kind == "digest":  # a digest's tag: the id of the detector it is for
        what = "names no detector of this route"
    return _bounded(f"invalid {kind + ' ' if kind else ''}event: {path or 'event'}: {what}")


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
