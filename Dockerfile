# A static ippool binary in an image with nothing else.
#   docker build -t ippool .
#   docker run -p 7480:7480 -v ippool-data:/data ippool serve --http-addr 0.0.0.0:7480 --data-dir /data
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /ippool ./cmd/ippool

FROM scratch
COPY --from=build /ippool /ippool
# ippool-data and the certificates live in volumes; the binary writes nowhere else.
VOLUME /data
EXPOSE 7480 7481 53/udp 53/tcp
ENTRYPOINT ["/ippool"]
CMD ["serve", "--data-dir", "/data", "--http-addr", "0.0.0.0:7480"]
