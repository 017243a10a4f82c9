# Weft's build, test and benchmark entry points. `make test` is what CI runs.
GO      ?= go
BIN     ?= bin/weft
export CGO_ENABLED ?= 0
# grpcnotrace drops grpc's golang.org/x/net/trace (/debug/requests, never
# enabled by weft), and with it html/template: 4.3 MB of the binary.
TAGS    ?= grpcnotrace

.PHONY: build demo test test-unit test-e2e deps bench proto fmt vet image fuzz

# What `weft version` prints, stamped into the binary (package version).
VERSION ?= $(shell git describe --tags --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VERSION_PKG := github.com/weftmesh/weft/version
LDFLAGS := -s -w -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT) -X $(VERSION_PKG).date=$(DATE)

build:
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/weft

demo: build
	./$(BIN) demo

# deps installs what the tests need (Debian packages), idempotently, and
# builds the kube-apiserver the Kubernetes tests run against when its cached
# binary is missing (scripts/kube-tools.sh).
deps:
	bash scripts/deps.sh
	bash scripts/kube-tools.sh >/dev/null
	bash scripts/h2spec.sh >/dev/null

test: deps build vet
	$(GO) test -count=1 -timeout 25m ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || (gofmt -l . && echo "gofmt: files above need formatting" && false)

# image builds weft:$(VERSION) (Dockerfile, FROM scratch) and the compose
# example's app image from binaries built here; fails past 30 MB.
image: build
	VERSION=$(VERSION) GO=$(GO) bash scripts/image.sh $(BIN)

# fuzz runs every fuzz target for FUZZTIME each (default 20s); `go test` runs only their seeds.
fuzz:
	FUZZTIME=$(or $(FUZZTIME),20s) bash scripts/fuzz.sh

bench: build
	bash bench/run.sh

# bench-push: registration → every subscribed sidecar, with 1,000 and 5,000
# simulated sidecars on one control plane (bench/push). bench-messaging:
# publish → callback through two sidecars against direct JetStream.
.PHONY: bench-push bench-messaging
bench-push: build
	$(GO) run ./bench/push -weft $(BIN) -sidecars 1000
	$(GO) run ./bench/push -weft $(BIN) -sidecars 5000 -events 20

bench-messaging: build
	$(GO) run ./bench/messaging -weft $(BIN) -duration 5s
	$(GO) run ./bench/messaging -weft $(BIN) -duration 5s -keys 64

# proto regenerates the committed gRPC code (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
proto:
	cd api/discoveryv1 && protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative discovery.proto
