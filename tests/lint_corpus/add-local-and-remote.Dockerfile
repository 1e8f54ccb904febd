FROM debian:12.5-slim
ADD rootfs.tar.gz /
ADD config.yaml /etc/app/
ADD https://downloads.acme-tools.dev/tool-1.2.tgz /tmp/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/tools/other.tgz /tmp/
USER 1000
