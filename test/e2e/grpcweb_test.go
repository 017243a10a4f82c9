package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// serveGRPCWeb is an HTTP/1.1-only app answering as a gRPC-Web server
// does: /head?code=N with the status in the head (trailers-only),
// /trailer?code=N with a message and the status in the chunked body's
// trailer.
func serveGRPCWeb(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	srv := &http.Server{Protocols: &protos, ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			code := r.URL.Query().Get("code")
			w.Header().Set("Content-Type", "application/grpc-web+proto")
			if r.URL.Path == "/head" {
				w.Header().Set("Grpc-Status", code)
				w.Header().Set("Grpc-Message", "from the head")
				return
			}
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(200)
			w.Write([]byte("\x00\x00\x00\x00\x02hi"))
			w.(http.Flusher).Flush() // chunked, so the trailer can follow
			w.Header().Set("Grpc-Status", code)
		})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestGRPCWebStatusFastPath: gRPC-Web calls over HTTP/1.1 go through a
// client sidecar and a server sidecar on the fast path, and both label
// weft_requests_total with the call's grpc_status, read from the
// response head or its trailer, as for gRPC over HTTP/2.
func TestGRPCWebStatusFastPath(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	web := StartSidecar(t, cp, SidecarOpts{Service: "gweb", AppPort: serveGRPCWeb(t)})
	web.WaitRegistered(cp, eventually)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())

	calls := []struct{ path, code string }{
		{"/head", "5"}, {"/head", "5"}, {"/trailer", "0"}, {"/trailer", "0"}, {"/trailer", "0"}, {"/trailer", "7"},
	}
	for _, call := range calls {
		req, _ := http.NewRequest("POST", "http://gweb"+call.path+"?code="+call.code, strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc-web+proto")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", call.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := resp.Header.Get("Grpc-Status")
		if call.path == "/trailer" {
			got = resp.Trailer.Get("Grpc-Status")
		}
		if resp.StatusCode != 200 || got != call.code {
			t.Fatalf("POST %s?code=%s through the mesh: %d, grpc-status %q (x-weft-error %q)", call.path, call.code,
				resp.StatusCode, got, resp.Header.Get("X-Weft-Error"))
		}
	}
	want := map[string]float64{"0": 3, "5": 2, "7": 1}
	for _, x := range []struct {
		s   *Sidecar
		rep string
	}{{client, "client"}, {web, "server"}} {
		var got map[string]float64
		ok := harness.Poll(10*time.Second, func() bool {
			got = map[string]float64{}
			for code := range want {
				got[code] = metricSum(t, x.s, "weft_requests_total", `reporter="`+x.rep+`"`, `destination_service="gweb"`, `grpc_status="`+code+`"`)
			}
			return fmt.Sprint(got) == fmt.Sprint(want)
		})
		if !ok {
			t.Errorf("%s sidecar: weft_requests_total{reporter=%s,destination_service=gweb} by grpc_status %v, want %v",
				x.rep, x.rep, got, want)
		}
	}
}
