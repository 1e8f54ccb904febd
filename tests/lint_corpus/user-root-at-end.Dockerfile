FROM ubuntu:22.04
RUN useradd -r -u 10001 app
USER app
COPY run.sh /run.sh
USER root
ENTRYPOINT ["/run.sh"]
