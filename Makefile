# ensure-user - every target is listed by `make help`.
SHELL := /bin/bash
GO    ?= go
PKGS  := ./...
BIN   := bin
# TOOLS is the tools module (load test, soak): its own go.mod, so the
# service's go.mod does not carry its plotting, font and PDF libraries.
TOOLS := tools
# PROD_TAGS are the build tags of the binaries as shipped (make build, the
# Dockerfile): nodev leaves ensure-user's dev mode, and the embedded Redis
# with it, out of the binary.
PROD_TAGS := nodev

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## run the service locally (embedded Redis, dev keys and Engine; see README)
	$(GO) run ./cmd/ensure-user dev

.PHONY: test
test: ## run every test, the service's and tools/', with the race detector (Redis tests start their own redis-server)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	$(GO) -C $(TOOLS) test -race -count=1 -timeout 15m $(PKGS)

.PHONY: generate
generate: ## regenerate app/wire_gen.go
	$(GO) tool wire gen ./app

.PHONY: check-generated
check-generated: ## fail when app/wire_gen.go is stale
	$(GO) tool wire diff ./app

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, the wire check, go mod tidy -diff, govulncheck; both modules (layer rules: test/arch)
	@out=$$(git ls-files --cached --others --exclude-standard '*.go' | while read -r f; do [ ! -e "$$f" ] || echo "$$f"; done | xargs -r gofmt -l); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags $(PROD_TAGS) ./cmd/...
	$(GO) -C $(TOOLS) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	$(GO) -C $(TOOLS) run $(STATICCHECK) $(PKGS)
	@$(GO) tool wire diff ./app || { echo "app/wire_gen.go is stale: run make generate"; exit 1; }
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@$(GO) -C $(TOOLS) mod tidy -diff || { echo "$(TOOLS)/go.mod/go.sum are not tidy: run go mod tidy in $(TOOLS)"; exit 1; }
	@$(MAKE) --no-print-directory vuln

# VULNDB is govulncheck's vulnerability database; VULN_TIMEOUT bounds each
# run, so that a database that never answers cannot hang the target.
VULNDB       := https://vuln.go.dev
VULN_TIMEOUT := 120

.PHONY: vuln
vuln: ## govulncheck (pinned in go.mod) on both modules; skipped, saying so, when the database is unreachable
	@for dir in . $(TOOLS); do \
	  out=$$(timeout $(VULN_TIMEOUT) $(GO) tool govulncheck -db $(VULNDB) -C $$dir ./... 2>&1); rc=$$?; \
	  if [ $$rc -eq 0 ]; then echo "govulncheck ($$dir): no vulnerabilities"; \
	  elif [ $$rc -eq 1 ] && grep -q '^govulncheck: fetching vulnerabilities: ' <<<"$$out"; then \
	    echo "govulncheck: skipped: vulnerability database $(VULNDB:https://%=%) unreachable"; \
	    grep '^govulncheck: fetching vulnerabilities: ' <<<"$$out" | sed 's/^/  /'; exit 0; \
	  elif [ $$rc -eq 124 ]; then \
	    echo "govulncheck: skipped: no answer within $(VULN_TIMEOUT)s (vulnerability database $(VULNDB:https://%=%) unreachable?)"; exit 0; \
	  else echo "$$out"; echo "govulncheck ($$dir) failed (exit $$rc)"; exit 1; fi; \
	done

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
bench: ## run the service's hot-path benchmarks (-benchmem, 5 runs) into bench.txt; compare with benchstat
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS) | tee bench.txt

# loadtest and soak live in the tools module: built there, run from here, so
# that relative paths in LOADTEST_FLAGS and SOAK_FLAGS mean what they did.
.PHONY: loadtest
loadtest: ## whole-path load test (redis-server, engine-sim, ensure-user); report under results/
	$(GO) -C $(TOOLS) build -o $(CURDIR)/$(BIN)/loadtest ./cmd/loadtest
	$(BIN)/loadtest $(LOADTEST_FLAGS)

.PHONY: soak
soak: ## 5-minute soak with Redis restarts; fails if RSS or goroutines keep growing
	$(GO) -C $(TOOLS) build -o $(CURDIR)/$(BIN)/soak ./cmd/soak
	$(BIN)/soak $(SOAK_FLAGS)

.PHONY: build
build: ## build the production binaries (no dev mode: -tags nodev) and the tools into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -tags $(PROD_TAGS) -o $(BIN)/ ./cmd/...
	CGO_ENABLED=0 $(GO) -C $(TOOLS) build -trimpath -o $(CURDIR)/$(BIN)/ ./cmd/...
