"""The do-nothing faust workers of ``modelsiem bench``: the framework's own cost, for comparison.

``python -m modelsiem.bench_noop`` takes one event at a time from a faust stream; with
``batch`` it takes the records as the worker does, a fetched piece at a time
(``stream.handover``), and acknowledges them.
"""

from __future__ import annotations

import sys

import faust

from connectors.kafka import ensure_topics
from modelsiem.settings import Settings
from stream.app import BATCH_MAX, new_app
from stream.handover import acknowledge
from stream.runtime import collect_less_often


def main() -> None:
    batched = sys.argv[1:] == ["batch"]
    sys.argv[1:] = []  # faust reads the command line too
    settings = Settings()
    partitions = ensure_topics(settings)[settings.topics.inference]
    app = new_app(settings, partitions, app_id=f"{settings.app_id}-noop{'-batch' if batched else ''}")
    topics = [settings.topics.inference, settings.topics.feedback]
    topic = app.topic(*topics, key_type=bytes, value_type=bytes)
    queue = app.handover.register(topics) if batched else None

    @app.agent(topic, name="modelsiem.bench-noop")
    async def noop(stream: faust.StreamT) -> None:
        if queue is not None:
            async for raws in app.handover.pieces(queue, BATCH_MAX):
                acknowledge(app.consumer, raws)
        else:
            async for _ in stream:
                pass

    collect_less_often()  # as the worker does: the comparison is of the agents' work, not of their settings
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
