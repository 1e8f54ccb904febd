# escape=`
FROM mcr.microsoft.com/powershell:7.4-alpine-3.17
RUN apk add --no-cache `
      git `
      curl
COPY scripts/ C:/scripts/
USER 1000
