FROM golang:1.22-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -o /out/svc .

FROM alpine:3.20
COPY --from=build /out/svc /usr/local/bin/svc
RUN apk add --no-cache ca-certificates
USER 10001
ENTRYPOINT ["svc"]
