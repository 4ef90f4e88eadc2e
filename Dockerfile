# syntax=docker/dockerfile:1
# quorumq: a static binary on distroless, running as non-root.
#   docker build -t quorumq:dev .
#   docker run --rm -p 8080:8080 -p 9090:9090 quorumq:dev --help

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused while only sources change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: a static binary that needs no libc (Pebble builds without cgo).
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/quorumq ./cmd/quorumq

# distroless static: CA certificates, /etc/passwd with nonroot (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/quorumq /usr/local/bin/quorumq
USER 65532:65532
# REST + probes, gRPC, peers (Raft), metrics
EXPOSE 8080 9090 7000 9100
ENTRYPOINT ["/usr/local/bin/quorumq", "serve"]
