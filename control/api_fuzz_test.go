package control_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/weftmesh/weft/control"
)

// FuzzAPI sends arbitrary bodies, resource names and query strings to the
// control plane's JSON API, a real server on loopback. Every answer is
// below 500 (the input is the client's fault or fine) and is JSON, and the
// server keeps answering /healthz.
func FuzzAPI(f *testing.F) {
	manifest := "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: orders\nspec:\n  service: orders\n  loadBalancer:\n    algorithm: consistent_hash\n    hashKey: header:x-user-id\n"
	f.Add(uint8(0), "TrafficPolicy", "orders", "", []byte(manifest))
	f.Add(uint8(1), "TrafficPolicy", "orders", "", []byte(manifest))
	f.Add(uint8(2), "", "", "", []byte(`{"apiVersion":"weft.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"a"},"spec":{"service":"a","timeout":"-1s"}}`))
	f.Add(uint8(3), "Subscription", "x", "", []byte("---\n---\nkind: [\n"))
	f.Add(uint8(4), "", "", "window=5m&service=orders", []byte(nil))
	f.Add(uint8(5), "", "", "limit=-1&service=%zz", []byte(nil))
	f.Add(uint8(6), "4bf92f3577b34da6a3ce929d0e0e4736", "", "", []byte(nil))
	f.Add(uint8(7), "TrafficPolicy", "", "", []byte(nil))

	s, err := control.New(control.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: f.TempDir(), LeaseTTL: 2 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	f.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			f.Error("control plane did not stop")
		}
	})
	base := "http://" + s.HTTPAddr()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	f.Cleanup(hc.CloseIdleConnections)

	f.Fuzz(func(t *testing.T, op uint8, a, b, query string, body []byte) {
		pa, pb := url.PathEscape(a), url.PathEscape(b)
		var method, path string
		switch op % 8 {
		case 0:
			method, path = "PUT", "/api/v1/resources/"+pa+"/"+pb
		case 1:
			method, path = "POST", "/api/v1/apply"
		case 2:
			method, path = "POST", "/api/v1/delete"
		case 3:
			method, path = "DELETE", "/api/v1/resources/"+pa+"/"+pb
		case 4:
			method, path = "GET", "/api/v1/stats"
		case 5:
			method, path = "GET", "/api/v1/traces"
		case 6:
			method, path = "GET", "/api/v1/traces/"+pa
		case 7:
			method, path = "GET", "/api/v1/resources/"+pa
		}
		u := base + path
		if q, err := url.ParseQuery(query); err == nil && len(q) > 0 {
			u += "?" + q.Encode()
		}
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, resp.StatusCode, out)
		}
		if resp.StatusCode != 404 && !json.Valid(out) {
			t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, out)
		}
		if resp, err := hc.Get(base + "/healthz"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz after %s %s: %v %v", method, path, resp, err)
		} else {
			resp.Body.Close()
		}
	})
}
