package hardening_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// interopCases are the gRPC interoperability test cases (grpc/interop,
// doc/interop-test-descriptions.md) that need no credentials or load
// balancer: the client functions of google.golang.org/grpc/interop, run
// against that package's own test server.
var interopCases = []struct {
	name string
	run  func(ctx context.Context, cc *grpc.ClientConn)
}{
	{"empty_unary", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"large_unary", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"client_streaming", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"server_streaming", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"ping_pong", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"empty_stream", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"timeout_on_sleeping_server", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"cancel_after_begin", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"cancel_after_first_response", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"status_code_and_message", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"special_status_message", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(cc))
	}},
	{"unimplemented_method", func(ctx context.Context, cc *grpc.ClientConn) { interop.DoUnimplementedMethod(ctx, cc) }},
	{"unimplemented_service", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
	}},
	{"custom_metadata", func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(cc))
	}},
}

// interopFailure is what the interop client functions' Fatal becomes
// (grpclog would os.Exit): a panic that runInterop recovers.
type interopFailure string

// panicLogger is a grpclog.LoggerV2 that drops info and warnings, and
// panics on Fatal.
type panicLogger struct{}

func (panicLogger) Info(...any)             {}
func (panicLogger) Infoln(...any)           {}
func (panicLogger) Infof(string, ...any)    {}
func (panicLogger) Warning(...any)          {}
func (panicLogger) Warningln(...any)        {}
func (panicLogger) Warningf(string, ...any) {}
func (panicLogger) Error(...any)            {}
func (panicLogger) Errorln(...any)          {}
func (panicLogger) Errorf(string, ...any)   {}
func (panicLogger) Fatal(a ...any)          { panic(interopFailure(fmt.Sprint(a...))) }
func (panicLogger) Fatalln(a ...any)        { panic(interopFailure(fmt.Sprintln(a...))) }
func (panicLogger) Fatalf(f string, a ...any) {
	panic(interopFailure(fmt.Sprintf(f, a...)))
}
func (panicLogger) V(int) bool { return false }

var setLogger sync.Once

// runInterop runs one case, returning its failure ("" when it passed).
func runInterop(cc *grpc.ClientConn, run func(context.Context, *grpc.ClientConn)) (failure string) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(interopFailure)
			if !ok {
				panic(r)
			}
			failure = strings.TrimSpace(string(f))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run(ctx, cc)
	return ""
}

// TestGRPCInterop runs the interop cases against the interop test server
// directly, then through a client sidecar and a server sidecar (h2c on
// every hop), and requires each to pass both ways.
func TestGRPCInterop(t *testing.T) {
	setLogger.Do(func() { grpclog.SetLoggerV2(panicLogger{}) })
	port := startInteropServer(t)

	m := startMesh(t, port, "")
	dial := func(target, authority string) *grpc.ClientConn {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if authority != "" {
			opts = append(opts, grpc.WithAuthority(authority))
		}
		cc, err := grpc.NewClient(target, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	direct := dial(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "")
	mesh := dial(m.outbound, "back")
	// The first call through the mesh may find the instance not yet known.
	if !pollInterop(mesh) {
		t.Fatal("empty_unary through the mesh never passed")
	}
	passed := 0
	for _, tc := range interopCases {
		t.Run(tc.name, func(t *testing.T) {
			if f := runInterop(direct, tc.run); f != "" {
				t.Fatalf("direct: %s", f)
			}
			if f := runInterop(mesh, tc.run); f != "" {
				t.Fatalf("through the sidecars: %s", f)
			}
			passed++
		})
	}
	t.Logf("gRPC interop: %d/%d cases passed direct and through the sidecar pair", passed, len(interopCases))
	// A bulk stream (64 MiB in 32 KiB messages) makes the clients send
	// WINDOW_UPDATE and BDP PING frames as fast as data flows: the h2
	// guard must not take that for a flood.
	t.Run("bulk_server_streaming", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		params := make([]*testpb.ResponseParameters, 2048)
		for i := range params {
			params[i] = &testpb.ResponseParameters{Size: 32 << 10}
		}
		st, err := testgrpc.NewTestServiceClient(mesh).StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			r, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d messages: %v", n, err)
			}
			n += len(r.GetPayload().GetBody())
		}
		if n != 2048*32<<10 {
			t.Fatalf("received %d bytes", n)
		}
		for _, admin := range []string{m.clientAdmin, m.serverAdmin} {
			if c := metric(t, admin, "weft_listener_closed_total"); c != 0 {
				t.Errorf("%s: weft_listener_closed_total = %v", admin, c)
			}
		}
	})
	// The hop between the sidecars is mutual TLS (the client sidecar's
	// h2 engine offers ALPN h2 only), not plaintext.
	if n := metric(t, m.serverAdmin, "weft_mtls_handshakes_total"); n < 1 {
		t.Errorf("server sidecar: weft_mtls_handshakes_total = %v, want the client sidecar's mTLS connections", n)
	}
	if n := metric(t, m.serverAdmin, "weft_mtls_plaintext_connections_total"); n != 0 {
		t.Errorf("server sidecar: %v plaintext connections on the sidecar hop", n)
	}
	// They did go through the mesh: the server sidecar counted gRPC
	// requests, and a case against a service that does not exist fails.
	if n := metric(t, m.serverAdmin, "weft_requests_total", `reporter="server"`, `grpc_status="0"`); n < 8 {
		t.Errorf("server sidecar counted %v gRPC requests", n)
	}
	if f := runInterop(dial(m.outbound, "nosuch"), interopCases[0].run); !strings.Contains(f, "unknown_service") && !strings.Contains(f, "Unavailable") {
		t.Errorf("empty_unary to an unknown service: %q, want a failure", f)
	}
}

func pollInterop(cc *grpc.ClientConn) bool {
	deadline := time.Now().Add(eventually)
	for time.Now().Before(deadline) {
		if runInterop(cc, interopCases[0].run) == "" {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// startInteropServer serves grpc-go's interop test service on a fresh
// loopback port until the test ends, and returns the port.
func startInteropServer(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, interop.NewTestServer())
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}
