# Stage 1 builds the wheel from what `pip install .` needs: pyproject.toml and README.md, and
# the packages with their package data (the console app/ and its pages, the ledger's SQL
# files and migrations). tests/packaging/test_wheel.py builds its wheel from exactly the files
# these COPY lines name and runs `orch db upgrade` and `orch console` from it.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY worker worker
COPY dashboards dashboards
COPY app app
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Stage 2 installs only the wheel: no source tree in the image, so every process (and the
# console's Streamlit) runs the installed package. Processes run as the unprivileged `orch`.
FROM python:3.11-slim
COPY --from=build /dist /dist
RUN pip install --no-cache-dir /dist/*.whl \
    && rm -rf /dist \
    && useradd --system --create-home --home-dir /home/orch orch
USER orch
WORKDIR /home/orch
ENTRYPOINT ["orch"]
