"""The do-nothing faust workers of ``modelsiem bench``: the framework's own cost, for comparison.

``python -m modelsiem.bench_noop`` takes one event at a time; with ``batch`` it
takes them in batches as the worker does (``stream.app.BATCH_MAX``).
"""

from __future__ import annotations

import sys

import faust

from connectors.kafka import ensure_topics
from modelsiem.settings import Settings
from stream.app import BATCH_MAX, BATCH_WITHIN, new_app
from stream.runtime import collect_less_often


def main() -> None:
    batched = sys.argv[1:] == ["batch"]
    sys.argv[1:] = []  # faust reads the command line too
    settings = Settings()
    partitions = ensure_topics(settings)[settings.topics.inference]
    app = new_app(settings, partitions, app_id=f"{settings.app_id}-noop{'-batch' if batched else ''}")
    topic = app.topic(settings.topics.inference, settings.topics.feedback, key_type=bytes, value_type=bytes)

    @app.agent(topic, name="modelsiem.bench-noop")
    async def noop(stream: faust.StreamT) -> None:
        if batched:
            async for _ in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
                pass
        else:
            async for _ in stream:
                pass

    collect_less_often()  # as the worker does: the comparison is of the agents' work, not of their settings
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
