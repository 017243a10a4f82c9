package hardening_test

import (
	"context"
	"io"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/grpclog"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// TestH2GracefulDrain: a gRPC stream in flight through both sidecars
// (native h2 engine) when the server sidecar is told to stop runs to its
// end: the sidecar sends GOAWAY, takes no new stream, and waits for the
// open ones before it exits.
func TestH2GracefulDrain(t *testing.T) {
	port := startInteropServer(t)
	m := startMesh(t, port, "", "--h2-engine", "native", "--drain", "20s")
	cc, err := grpc.NewClient(m.outbound, grpc.WithAuthority("back"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	setLogger.Do(func() { grpclog.SetLoggerV2(panicLogger{}) })
	if !pollInterop(cc) {
		t.Fatal("no call through the mesh passed")
	}
	const n = 30 // 3 s of messages, 100 ms apart
	params := make([]*testpb.ResponseParameters, n)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: 1024, IntervalUs: 100_000}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		_, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		if got++; got == 3 {
			m.server.Signal(syscall.SIGTERM)
		}
	}
	if got != n {
		t.Fatalf("received %d of %d messages", got, n)
	}
	if !m.server.WaitExit(30 * time.Second) {
		t.Fatal("the server sidecar did not exit after its streams ended")
	}
}
