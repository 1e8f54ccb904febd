FROM python:3.12-slim
ARG GIT_SHA
LABEL org.opencontainers.image.revision=$GIT_SHA
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
USER 10001
