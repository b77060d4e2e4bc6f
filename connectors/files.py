"""JSON-lines files: the source and sink of offline replay and simulation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line; bytes so that the decoder sees what Kafka would."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if line:
                yield number, line


class JsonLinesWriter:
    """Appends one JSON document per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> JsonLinesWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("wb")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fh is not None
        self._fh.close()

    def write(self, doc: dict[str, Any]) -> None:
        assert self._fh is not None, "use JsonLinesWriter as a context manager"
        self._fh.write(orjson.dumps(doc) + b"\n")

    def write_all(self, docs: Iterable[dict[str, Any]]) -> None:
        for doc in docs:
            self.write(doc)


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for _, raw in read_lines(path)]
