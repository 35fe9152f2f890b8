# kefu — developer tasks. `make test` is what CI runs (see .ci/run).
GO       ?= go
PKGS     ?= ./...
TIMEOUT  ?= 20m

.PHONY: all build test test-race test-short lint vet fmt bench fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o kefu ./cmd/kefu

# The whole suite, with the race detector: unit, contract, end-to-end and
# crash tests. Tests that need PostgreSQL, Redis or NATS read KEFU_TEST_*;
# KEFU_REQUIRE_SERVICES=1 turns their skips into failures.
test:
	$(GO) test -race -timeout $(TIMEOUT) $(PKGS)

test-race: test

# Quick loop while editing: no race detector, no long tests.
test-short:
	$(GO) test -short $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

lint: vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@if command -v golangci-lint >/dev/null; then golangci-lint run; \
	else echo "golangci-lint not installed; ran go vet and gofmt only"; fi

# Go benchmarks of the hot path; `kefu bench` measures a running server.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# Short fuzzing pass over every parser of outside input.
fuzz:
	@for p in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep '^Fuzz'); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$p || exit 1; \
	  done; \
	done

clean:
	rm -rf kefu data
