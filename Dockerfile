# Two images, both a static binary on distroless, non-root:
#   production (the default, last target): ensure-user alone, built as make
#     build builds it (-tags nodev: no dev mode, no embedded Redis).
#       docker build -t ensure-user .
#       docker run -p 8000:8000 -e JWKS_URL=... ensure-user
#   staging: the same ensure-user plus engine-sim, the reference Engine.
#       docker build --target staging -t ensure-user:staging .
#       docker run ensure-user:staging                     (the service)
#       docker run --entrypoint /usr/local/bin/engine-sim ensure-user:staging   (the Engine)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN go build -trimpath -tags nodev \
      -ldflags "-s -w -X github.com/ensure-user/ensure-user/internal/buildinfo.version=${VERSION}" \
      -o /out/ ./cmd/ensure-user

# engine-sim is built only for the staging target.
FROM build AS build-engine-sim
ARG VERSION=dev
RUN go build -trimpath -tags nodev \
      -ldflags "-s -w -X github.com/ensure-user/ensure-user/internal/buildinfo.version=${VERSION}" \
      -o /out/ ./cmd/engine-sim

FROM gcr.io/distroless/static-debian12:nonroot AS staging
COPY --from=build-engine-sim /out/ensure-user /out/engine-sim /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ensure-user"]
CMD ["serve"]

FROM gcr.io/distroless/static-debian12:nonroot AS production
COPY --from=build /out/ensure-user /usr/local/bin/
USER nonroot:nonroot
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ensure-user"]
CMD ["serve"]
