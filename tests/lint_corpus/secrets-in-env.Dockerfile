FROM python:3.12-alpine
ARG GITHUB_TOKEN
ENV DATABASE_PASSWORD=hunter2
ENV DB_PASSWORD_FILE=/run/secrets/db
RUN pip install --no-cache-dir --index-url https://deploy:s3cr3tpass@pypi.acme-internal.dev/simple private-lib
USER 1000
