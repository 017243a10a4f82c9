package h1

import (
	"net/http"
	"testing"
)

// TestGRPCStatusRecorded: a grpc-status in a response's head or in its
// chunked trailer (a gRPC-Web answer) reaches Finish in
// Result.GRPCStatus, the trailer winning, and is relayed unchanged.
func TestGRPCStatusRecorded(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc-web+proto")
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Grpc-Status", "5")
			w.Header().Set("Grpc-Message", "not found")
		case "/trailer":
			w.Header().Set("Trailer", "Grpc-Status")
			w.Header().Set("Grpc-Status", "0") // the head's, replaced by the trailer's
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			w.Write([]byte("message"))
			w.Header().Set("Grpc-Status", "14")
		case "/odd":
			w.Header().Set("Grpc-Status", "not-a-code")
		}
	}))
	rr := &recRouter{addr: be.addr()}
	c := dial(t, newEngine(t, &Server{Router: rr}))
	for i, tc := range []struct{ path, want, trailer string }{
		{"/head", "5", ""}, {"/trailer", "14", "14"}, {"/plain", "", ""}, {"/odd", "not-a-code", ""},
	} {
		c.send("GET " + tc.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, _ := c.read("GET")
		if got := rr.result(t, i+1).GRPCStatus; got != tc.want {
			t.Errorf("%s: Result.GRPCStatus %q, want %q", tc.path, got, tc.want)
		}
		if got := resp.Trailer.Get("Grpc-Status"); got != tc.trailer {
			t.Errorf("%s: relayed trailer grpc-status %q, want %q", tc.path, got, tc.trailer)
		}
		if tc.path == "/head" && resp.Header.Get("Grpc-Status") != "5" {
			t.Errorf("/head: relayed head grpc-status %q", resp.Header.Get("Grpc-Status"))
		}
	}
}

func TestGRPCStatusStringAllocs(t *testing.T) {
	v := []byte("13")
	if n := testing.AllocsPerRun(100, func() { _ = grpcStatusString(v) }); n != 0 {
		t.Errorf("%v allocations for a known code", n)
	}
	if got := grpcStatusString([]byte("17")); got != "17" {
		t.Errorf("17 → %q", got)
	}
}
