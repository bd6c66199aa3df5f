# A static ippool binary in an image with nothing else. It serves the API on
# every interface of the container, so ACLs and HTTPS are on: serve refuses a
# non-loopback --http-addr without --acl and either HTTPS or --insecure.
#
#   docker build -t ippool .
#   docker run -d -p 7480:7480 -v ippool-data:/data -v "$PWD/tls:/etc/ippool/tls:ro" ippool
#   IPPOOL_ADDR=https://localhost:7480 IPPOOL_CACERT=tls/http-ca.pem ippool acl bootstrap   # prints the admin token
#
# ./tls, mounted at /etc/ippool/tls, holds:
#   http.pem, http-key.pem   the API's HTTPS certificate and key, from any CA; the
#                            certificate names every host clients use. A CA of your own:
#     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
#       -subj /CN=ippool-http-ca -keyout http-ca-key.pem -out http-ca.pem
#     openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=ippool \
#       -addext subjectAltName=DNS:localhost,DNS:ippool.example,IP:10.0.0.1 -keyout http-key.pem -out http.csr
#     openssl x509 -req -in http.csr -CA http-ca.pem -CAkey http-ca-key.pem -days 365 \
#       -copy_extensions copy -out http.pem
#   ca.pem, cert.pem, key.pem   mutual TLS between servers: the files of one server
#                            directory that `ippool tls init --dir DIR --servers N` writes
#                            (DIR/server-N) or of `ippool tls issue`'s --out, a different
#                            one in each server's container.
# Keep the CA keys (http-ca-key.pem, DIR/ca) out of the containers. Replacing
# http.pem and http-key.pem then `docker kill -s HUP` reloads them. A cluster
# also needs IPPOOL_ID, IPPOOL_CLUSTER_ADDR (this server's address as the
# others reach it), IPPOOL_JOIN and IPPOOL_BOOTSTRAP_EXPECT, and port 7481.
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
ENV IPPOOL_DATA_DIR=/data \
    IPPOOL_HTTP_ADDR=0.0.0.0:7480 \
    IPPOOL_ACL=true \
    IPPOOL_HTTP_TLS_CERT=/etc/ippool/tls/http.pem \
    IPPOOL_HTTP_TLS_KEY=/etc/ippool/tls/http-key.pem \
    IPPOOL_TLS_CA=/etc/ippool/tls/ca.pem \
    IPPOOL_TLS_CERT=/etc/ippool/tls/cert.pem \
    IPPOOL_TLS_KEY=/etc/ippool/tls/key.pem
ENTRYPOINT ["/ippool"]
CMD ["serve"]
