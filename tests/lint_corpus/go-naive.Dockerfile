FROM golang:1.22
WORKDIR /go/src/app
COPY . .
RUN go build -o /usr/local/bin/app ./cmd/server
CMD ["app"]
