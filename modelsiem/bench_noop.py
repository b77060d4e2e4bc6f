"""The do-nothing faust worker of ``modelsiem bench``: the framework's own cost, for comparison."""

from __future__ import annotations

import faust

from connectors.kafka import ensure_topics
from modelsiem.settings import Settings
from stream.app import new_app


def main() -> None:
    settings = Settings()
    partitions = ensure_topics(settings)[settings.topics.inference]
    app = new_app(settings, partitions, app_id=f"{settings.app_id}-noop")
    topic = app.topic(settings.topics.inference, settings.topics.feedback, key_type=bytes, value_type=bytes)

    @app.agent(topic, name="modelsiem.bench-noop")
    async def noop(stream: faust.StreamT) -> None:
        async for _ in stream:
            pass

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
