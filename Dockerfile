FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelsiem ./modelsiem
COPY stream ./stream
COPY detectors ./detectors
COPY connectors ./connectors
RUN pip install --no-cache-dir . && useradd --system modelsiem && mkdir -p /var/lib/modelsiem && chown modelsiem /var/lib/modelsiem
USER modelsiem
CMD ["modelsiem", "run"]
