# ensure-user - every target is listed by `make help`.
SHELL := /bin/bash
GO    ?= go
PKGS  := ./...
BIN   := bin

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## run the service locally (embedded Redis, dev keys and Engine; see README)
	$(GO) run ./cmd/ensure-user dev

.PHONY: test
test: ## run every test with the race detector (Redis tests start their own redis-server)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

.PHONY: generate
generate: ## regenerate app/wire_gen.go
	$(GO) tool wire gen ./app

.PHONY: check-generated
check-generated: ## fail when app/wire_gen.go is stale
	$(GO) tool wire diff ./app

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, the wire check, go mod tidy -diff (layer rules: test/arch)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	@$(GO) tool wire diff ./app || { echo "app/wire_gen.go is stale: run make generate"; exit 1; }
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

.PHONY: fuzz
# FUZZTIME is a count of inputs (Nx), not a duration: with a duration, Go 1.26's
# fuzz coordinator can report a spurious "context deadline exceeded" at the
# deadline on a loaded machine (golang/go#75804, fixed in Go 1.27).
fuzz: ## run each fuzz target briefly (FUZZTIME, default 100000x inputs); crashers land in testdata/fuzz
	@set -e; for file in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  for fn in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$file | cut -d' ' -f2); do \
	    echo "--- $$fn ($$(dirname $$file))"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $${FUZZTIME:-100000x} ./$$(dirname $$file); \
	  done; \
	done

.PHONY: bench
bench: ## run the hot-path benchmarks (-benchmem, 5 runs) into bench.txt; compare with benchstat
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS) | tee bench.txt

.PHONY: loadtest
loadtest: ## whole-path load test (redis-server, engine-sim, ensure-user); report under results/
	$(GO) run ./cmd/loadtest $(LOADTEST_FLAGS)

.PHONY: soak
soak: ## 5-minute soak with Redis restarts; fails if RSS or goroutines keep growing
	$(GO) run ./cmd/soak $(SOAK_FLAGS)

.PHONY: build
build: ## build the binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...
