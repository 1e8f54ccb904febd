FROM --platform=$BUILDPLATFORM rust:1.77-bookworm AS build
ARG TARGETPLATFORM
RUN case "$TARGETPLATFORM" in \
      "linux/arm64") echo aarch64-unknown-linux-gnu > /rust-target ;; \
      *) echo x86_64-unknown-linux-gnu > /rust-target ;; \
    esac \
    && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && cargo fetch
COPY src ./src
RUN cargo build --release --target "$(cat /rust-target)" \
    && cp "target/$(cat /rust-target)/release/app" /app

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /app /app
ENTRYPOINT ["/app"]
