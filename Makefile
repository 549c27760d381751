# Moat's make targets. `make help` lists them; `make test` is what the
# README and CI run.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
GOTESTFLAGS ?=
# -race only in CI: it doubles the suite's time on two cores.
ifeq ($(CI),true)
RACE := -race
endif

.PHONY: help deps build up test test-short lint cross bench fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## check for (and as root install) Go and the Debian packages of internal/up/packages.txt
	@./scripts/deps.sh

build: ## build bin/moat
	$(GO) build -o bin/moat ./cmd/moat

up: build ## as root: build bin/moat and run moat up (it installs the Debian packages it lacks); UP_FLAGS passes flags
	./bin/moat up $(UP_FLAGS)

# internal/e2e first: the longest package starts as soon as it is built
# (go test starts packages in the order given; design 0020).
test: deps lint ## lint, then run every test, including real PostgreSQL and namespace tests (root)
	$(GO) test $(RACE) -timeout 40m $(GOTESTFLAGS) ./internal/e2e ./...

test-short: ## unit tests only (no root, no PostgreSQL)
	$(GO) test -short ./...

lint: cross ## gofmt, go vet, staticcheck (the version go.mod pins), go mod tidy, the cross-builds
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

cross: ## build the tenant CLI for macOS and Windows (the server side is Linux-only)
	GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/moat
	GOOS=windows GOARCH=amd64 $(GO) build -o /dev/null ./cmd/moat

bench: deps build ## run the benchmarks under bench/ and print their tables
	@for d in bench/*/; do if [ -x "$$d/run.sh" ]; then echo "== $$d"; "$$d/run.sh"; fi; done

fuzz: ## fuzz the security invariants for 30 s each
	$(GO) test ./internal/domain -run '^$$' -fuzz FuzzParsePrefix -fuzztime 30s
	$(GO) test ./internal/domain -run '^$$' -fuzz FuzzAllowlist -fuzztime 30s
	$(GO) test ./internal/domain -run '^$$' -fuzz FuzzCompileAccess -fuzztime 30s
	$(GO) test ./internal/nft -run '^$$' -fuzz FuzzPolicy -fuzztime 30s
	$(GO) test ./internal/postgres -run '^$$' -fuzz FuzzRenderHBA -fuzztime 30s
	$(GO) test ./internal/postgres -run '^$$' -fuzz FuzzQuoteConf -fuzztime 30s
	$(GO) test ./internal/backup -run '^$$' -fuzz FuzzDecode -fuzztime 30s
	$(GO) test ./internal/apiserver -run '^$$' -fuzz FuzzDecoders -fuzztime 30s

clean: ## remove build outputs
	rm -rf bin
