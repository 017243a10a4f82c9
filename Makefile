# Weft's build, test and benchmark entry points. `make test` is what CI runs.
GO      ?= go
BIN     ?= bin/weft
export CGO_ENABLED ?= 0

.PHONY: build demo test test-unit test-e2e deps bench proto fmt vet fuzz

build:
	$(GO) build -trimpath -ldflags '-s -w' -o $(BIN) ./cmd/weft

demo: build
	./$(BIN) demo

# deps installs what the tests need (Debian packages), idempotently.
deps:
	bash scripts/deps.sh
	bash scripts/h2spec.sh >/dev/null

test: deps build vet
	$(GO) test -count=1 -timeout 25m ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || (gofmt -l . && echo "gofmt: files above need formatting" && false)

# fuzz runs every fuzz target for FUZZTIME each (default 20s); `go test` runs only their seeds.
fuzz:
	FUZZTIME=$(or $(FUZZTIME),20s) bash scripts/fuzz.sh

bench: build
	bash bench/run.sh

# proto regenerates the committed gRPC code (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
proto:
	cd api/discoveryv1 && protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative discovery.proto
