# Streambridge gateway image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge bridge
COPY connectors connectors
COPY pipelines pipelines
COPY gateway gateway
RUN pip install --no-cache-dir . && useradd --system --uid 10001 streambridge
USER streambridge
EXPOSE 8080
ENTRYPOINT ["streambridge", "serve", "--host", "0.0.0.0", "--port", "8080"]
