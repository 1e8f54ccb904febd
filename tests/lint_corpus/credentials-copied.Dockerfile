FROM alpine:3.20
COPY id_rsa /root/.ssh/id_rsa
COPY .npmrc /app/.npmrc
COPY app/ /app/
USER 1000
