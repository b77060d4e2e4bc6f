"""The one exception the stack raises.

The CLI prints ``str(exc)`` and exits, so every message is a single line
that tells the user what to do next.
"""

from __future__ import annotations


class StackError(RuntimeError):
    """The local Kafka/Elasticsearch stack could not be brought up or down."""
