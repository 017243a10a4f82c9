package hardening_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// TestAppDeadlineResetIsTimeout: a gRPC server resets a call's stream
// (RST_STREAM CANCEL) when the grpc-timeout it was given runs out. The
// server sidecar that passed the deadline on must answer that as the
// deadline (DEADLINE_EXCEEDED, x-weft-error upstream_timeout), not as an
// app failure. The call is sent straight to the inbound listener with a
// grpc-timeout and no deadline of the caller's own, so the app's timer is
// the only one that fires; through a client sidecar the same reset races
// with the client sidecar's own timer (TestGRPCDeadlineAndIdle).
func TestAppDeadlineResetIsTimeout(t *testing.T) {
	port := startInteropServer(t)
	m := startMesh(t, port, "")

	msg, err := proto.Marshal(&testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 3_000_000}}})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequest("POST", "http://back/grpc.testing.TestService/StreamingOutputCall", bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	req.Header.Set("grpc-timeout", "500m")
	start := time.Now()
	resp, err := h2Client(m.inbound).Do(req)
	if err != nil {
		t.Fatalf("call through the server sidecar: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	status, weftErr := resp.Trailer.Get("grpc-status")+resp.Header.Get("grpc-status"), resp.Trailer.Get("x-weft-error")+resp.Header.Get("x-weft-error")
	if status != "4" || weftErr != "upstream_timeout" {
		t.Fatalf("the app reset the call at its 500ms deadline: grpc-status %q, x-weft-error %q (message %q); want 4 (DEADLINE_EXCEEDED) and upstream_timeout",
			status, weftErr, resp.Trailer.Get("grpc-message")+resp.Header.Get("grpc-message"))
	}
	if took < 400*time.Millisecond || took > 2500*time.Millisecond {
		t.Errorf("answered after %s, want about the grpc-timeout's 500ms", took)
	}
}
