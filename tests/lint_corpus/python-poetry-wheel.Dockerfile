# syntax=docker/dockerfile:1.7
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir poetry==1.8.3
WORKDIR /src
COPY pyproject.toml poetry.lock ./
RUN --mount=type=cache,target=/root/.cache/pypoetry \
    poetry install --no-root --only main
COPY app ./app
RUN poetry build --format wheel

FROM python:3.11-slim
COPY --from=build /src/dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
USER 1000
ENTRYPOINT ["app"]
