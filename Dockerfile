# Minimal image: a static ensure-user (and engine-sim) on distroless, non-root.
# Build: docker build -t ensure-user .   Run: docker run -p 8000:8000 -e JWKS_URL=... ensure-user
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/ensure-user/ensure-user/internal/buildinfo.version=${VERSION}" \
      -o /out/ ./cmd/ensure-user ./cmd/engine-sim

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ensure-user /out/engine-sim /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ensure-user"]
CMD ["serve"]
