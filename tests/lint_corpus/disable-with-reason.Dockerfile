# The entrypoint starts as root to fix volume ownership, then drops to uid 10001 with su-exec.
# pipeline-lint: disable=PL310 reason="entry.sh drops privileges itself"
FROM alpine:3.20
RUN apk add --no-cache tini su-exec
COPY entry.sh /entry.sh
ENTRYPOINT ["/sbin/tini", "--", "/entry.sh"]
