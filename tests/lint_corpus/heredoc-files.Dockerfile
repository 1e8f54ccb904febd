# syntax=docker/dockerfile:1.4
FROM alpine:3.20
COPY <<EOF /etc/app/app.conf
# not a Dockerfile comment: file content
FROM nothing:latest
listen = 8080
EOF
RUN <<-SCRIPT sh
	set -e
	apk add --no-cache ca-certificates
	echo done
	SCRIPT
COPY --chmod=0755 bin/ /usr/local/bin/
USER 10001
