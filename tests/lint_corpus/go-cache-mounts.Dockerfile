# syntax=docker/dockerfile:1
FROM --platform=${BUILDPLATFORM} golang:1.23 AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOARCH=${TARGETARCH} go build -o /bin/worker ./cmd/worker

FROM scratch
COPY --from=build /bin/worker /worker
USER 65534:65534
ENTRYPOINT ["/worker"]
