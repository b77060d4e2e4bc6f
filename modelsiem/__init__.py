"""modelsiem: a streaming model-activity SIEM connector.

Events come in through ``connectors`` (Kafka, files), are processed in
``stream`` by ``detectors``, and leave as ECS alerts through ``connectors``
(Kafka, Elasticsearch). This package holds the command line, the settings, the
local stack and the traffic simulator.
"""

__version__ = "0.1.0"
