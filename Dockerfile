FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY worker worker
COPY dashboards dashboards
COPY app app
RUN pip install --no-cache-dir . && useradd --system orch
USER orch
ENTRYPOINT ["orch"]
