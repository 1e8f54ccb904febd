FROM alpine:3.20
RUN apk add --no-cache ca-certificates tzdata
COPY --chmod=755 app.sh /usr/local/bin/app
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/app"]
