// Package e2e holds Weft's end-to-end tests. They build the real `weft`
// binary and the backend in ./testapp once (TestMain), then start real
// control planes, sidecars (`weft sidecar`, `weft run`) and backends on
// loopback, each test with its own control plane and ports, and check the
// behaviour the issue promises from the outside: HTTP, gRPC, WebSocket and
// raw TCP through two sidecars, every load-balancing algorithm, policy
// changes without restart, graceful and ungraceful instance loss, control
// plane loss, and the CLI's handling of bad input. No mocks.
//
// Building, ports and processes come from ./harness, which the messaging
// and telemetry suites (./messaging, ./telemetry) use too.
//
// Run: go test -count=1 -v ./test/e2e/...
// Set WEFT_E2E_BIN to test an already built weft binary instead.
package e2e
