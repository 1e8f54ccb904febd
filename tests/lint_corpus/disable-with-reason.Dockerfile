# The entrypoint starts as root to fix volume ownership, then drops to uid 10001 with su-exec.
FROM alpine:3.20
# pipeline-lint: disable=PL201 reason="the plugin installer run at startup reads the apk index"
RUN apk add tini su-exec
COPY entry.sh /entry.sh
ENTRYPOINT ["/sbin/tini", "--", "/entry.sh"]
