FROM alpine:3.20
WORKDIR /src
COPY . .
# pipeline-lint: disable=PL102
RUN apk add --no-cache make
USER 1000
