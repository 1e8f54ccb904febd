FROM debian:bookworm-slim
COPY . /opt/app
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
USER nobody
CMD ["python3", "/opt/app/main.py"]
