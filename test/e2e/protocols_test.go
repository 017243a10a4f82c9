package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestProtocols sends every protocol the issue names from a client sidecar
// to a server sidecar and on to a real backend: HTTP/1.1 in absolute form
// (HTTP_PROXY, curl -x) and origin form (Host header), gRPC over h2c (unary,
// server streaming, bidi, status), WebSocket, and opaque TCP via --upstream.
// The HTTP backend runs behind `weft sidecar --app-port`, the others behind
// `weft run`, so both commands carry traffic.
func TestProtocols(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)

	webPort := freePort(t)
	StartApp(t, "web-1", webPort)
	web := StartSidecar(t, cp, SidecarOpts{Service: "web", AppPort: webPort})
	web.WaitRegistered(cp, eventually)
	grpcSvc := StartRun(t, cp, RunOpts{Service: "echo-grpc", AppArgs: []string{"--grpc"}})
	inv := StartRun(t, cp, RunOpts{Service: "inv", AppArgs: []string{"--tcp-echo"}})
	tcpPort := freePort(t)
	client := StartClient(t, cp, map[string]int{"inv": tcpPort})
	c := proxyClient(client.OutboundAddr())

	t.Run("http1/absolute_form_via_proxy", func(t *testing.T) {
		rep := mustGet(t, c, "web", "/x?a=1&b=two", nil)
		if rep.Name != "web-1" || rep.Path != "/x" || rep.Query != "a=1&b=two" {
			t.Errorf("reply %+v: want name web-1, path /x, query a=1&b=two", rep)
		}
	})

	t.Run("http1/post_body", func(t *testing.T) {
		body := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
		resp, err := c.Post("http://web/upload", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rep Reply
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || json.Unmarshal(b, &rep) != nil || rep.Method != "POST" || rep.Path != "/upload" {
			t.Errorf("POST 256 KiB: status %d body %q", resp.StatusCode, truncate(string(b), 300))
		}
	})

	t.Run("http1/curl_proxy", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl not installed")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, curl, "-sS", "--max-time", "15", "-x", "http://"+client.OutboundAddr(), "http://web/items").CombinedOutput()
		var rep Reply
		if err != nil || json.Unmarshal(out, &rep) != nil || rep.Path != "/items" || rep.Name != "web-1" {
			t.Errorf("curl -x http://%s http://web/items: err %v, output %q", client.OutboundAddr(), err, truncate(string(out), 300))
		}
	})

	t.Run("http1/origin_form_host_header", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "http://"+client.OutboundAddr()+"/origin?z=9", nil)
		req.Host = "web"
		resp, err := plainClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var rep Reply
		if resp.StatusCode != 200 || json.Unmarshal(b, &rep) != nil || rep.Path != "/origin" || rep.Query != "z=9" || rep.Name != "web-1" {
			t.Errorf("GET /origin with Host: web at the outbound listener: status %d x-weft-error %q body %q",
				resp.StatusCode, resp.Header.Get("x-weft-error"), truncate(string(b), 300))
		}
	})

	t.Run("http1/origin_form_raw_keepalive", func(t *testing.T) {
		// Two requests on one raw connection, as a minimal client writes them.
		conn, err := net.DialTimeout("tcp", client.OutboundAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		br := bufio.NewReader(conn)
		for i, path := range []string{"/raw1", "/raw2"} {
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: web\r\nUser-Agent: e2e\r\n\r\n", path)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var rep Reply
			if resp.StatusCode != 200 || json.Unmarshal(b, &rep) != nil || rep.Path != path {
				t.Fatalf("request %d on one connection: status %d body %q", i+1, resp.StatusCode, truncate(string(b), 300))
			}
		}
	})

	t.Run("h2c_prior_knowledge_plain_http", func(t *testing.T) {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		h2c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Protocols: &protos}}
		req, _ := http.NewRequest("GET", "http://"+client.OutboundAddr()+"/h2c?v=1", nil)
		req.Host = "web"
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatalf("h2c GET with :authority web at the outbound listener: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var rep Reply
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || json.Unmarshal(b, &rep) != nil || rep.Path != "/h2c" || rep.Name != "web-1" {
			t.Errorf("h2c GET: %s status %d x-weft-error %q body %q", resp.Proto, resp.StatusCode, resp.Header.Get("x-weft-error"), truncate(string(b), 300))
		}
	})

	t.Run("grpc", func(t *testing.T) {
		cc, err := grpc.NewClient(client.OutboundAddr(), grpc.WithAuthority("echo-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		tc := testpb.NewTestServiceClient(cc)

		t.Run("unary", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			for _, size := range []int{5, 256 << 10} {
				body := randBytes(t, size)
				resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
				if err != nil {
					t.Fatalf("UnaryCall (%d bytes): %v", size, err)
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), body) || resp.Username != grpcSvc.Name {
					t.Errorf("UnaryCall (%d bytes): payload echoed %v, username %q (want %q)", size, bytes.Equal(resp.GetPayload().GetBody(), body), resp.Username, grpcSvc.Name)
				}
			}
		})

		t.Run("status_and_trailers", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order"}})
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such order" {
				t.Errorf("UnaryCall asking for NotFound: got %v", err)
			}
		})

		t.Run("server_streaming", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			sizes := []int32{1, 100, 1000, 64 << 10, 10}
			var params []*testpb.ResponseParameters
			for _, s := range sizes {
				params = append(params, &testpb.ResponseParameters{Size: s, IntervalUs: 20000})
			}
			stream, err := tc.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range sizes {
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
				if got := len(resp.GetPayload().GetBody()); got != int(want) {
					t.Errorf("message %d: %d bytes, want %d", i+1, got, want)
				}
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("after %d messages: want io.EOF (status OK), got %v", len(sizes), err)
			}
		})

		t.Run("bidi_full_duplex", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			stream, err := tc.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Each reply is read before the next send: a proxy that buffers
			// the request stream until it ends would deadlock here.
			for i := range 20 {
				msg := []byte(fmt.Sprintf("ping-%d-%s", i, strings.Repeat("x", i*100)))
				if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: msg}}); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("recv %d: %v", i, err)
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), msg) {
					t.Fatalf("message %d: echoed %q", i, truncate(string(resp.GetPayload().GetBody()), 50))
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("after CloseSend: want io.EOF (status OK), got %v", err)
			}
		})
	})

	t.Run("websocket_echo", func(t *testing.T) { websocketEcho(t, client.OutboundAddr(), 10, 200<<10) })

	t.Run("tcp_opaque_upstream", func(t *testing.T) {
		for round := range 2 {
			conn, err := net.DialTimeout("tcp", addr(tcpPort), 5*time.Second)
			if err != nil {
				t.Fatalf("dial --upstream inv=%s: %v", addr(tcpPort), err)
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			// Bytes that are no protocol at all, then a larger binary blob.
			for _, payload := range [][]byte{[]byte("\x00\x01hello raw tcp\r\n\r\n"), randBytes(t, 512<<10)} {
				errc := make(chan error, 1)
				go func() { _, err := conn.Write(payload); errc <- err }()
				got := make([]byte, len(payload))
				if _, err := io.ReadFull(conn, got); err != nil {
					conn.Close()
					t.Fatalf("round %d: reading %d echoed bytes: %v", round+1, len(payload), err)
				}
				if err := <-errc; err != nil {
					t.Fatalf("round %d: write: %v", round+1, err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("round %d: echoed bytes differ (%d bytes)", round+1, len(payload))
				}
			}
			conn.Close()
		}
		_ = inv
	})

	t.Run("admin_config_and_stats", func(t *testing.T) {
		code, body, err := httpGet(client.AdminURL() + "/config")
		if err != nil || code != 200 {
			t.Fatalf("client /config: %d %v", code, err)
		}
		if !json.Valid([]byte(body)) {
			t.Errorf("client /config is not JSON: %q", truncate(body, 300))
		}
		if !strings.Contains(body, `"web"`) || !strings.Contains(body, web.InboundAddr()) {
			t.Errorf("client /config does not show destination web with its instance %s: %s", web.InboundAddr(), truncate(body, 2000))
		}
		st, err := client.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.OutboundRequests < 5 {
			t.Errorf("client /stats outbound_requests = %d after ≥ 5 outbound HTTP requests", st.OutboundRequests)
		}
		wst, err := web.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if wst.InboundRequests < 5 {
			t.Errorf("web sidecar /stats inbound_requests = %d after ≥ 5 inbound HTTP requests", wst.InboundRequests)
		}
	})
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMeshErrors: the mesh's own errors are 503s with x-weft-error and a JSON
// body naming the code and the service.
func TestMeshErrors(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	client := StartClient(t, cp, nil)
	c := proxyClient(client.OutboundAddr())

	t.Run("unknown_service", func(t *testing.T) {
		checkMeshError(t, meshGet(c, "no-such-service", "/", nil), 503, "unknown_service", "no-such-service")
	})

	t.Run("no_ready_instances", func(t *testing.T) {
		// A registered instance whose app stops accepting connections: the
		// service still has an instance, and none of them is ready.
		port := freePort(t)
		app := StartApp(t, "payments-1", port)
		s := StartSidecar(t, cp, SidecarOpts{Service: "payments", AppPort: port})
		s.WaitRegistered(cp, eventually)
		mustGet(t, c, "payments", "/before", nil)
		app.KillGroup()
		var m map[string][]InstanceJSON
		ok := poll(eventually, 50*time.Millisecond, func() bool {
			var err error
			m, err = cp.Services()
			if err != nil || len(m["payments"]) == 0 {
				return false
			}
			for _, in := range m["payments"] {
				if in.Ready {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Fatalf("after its app died, /api/v1/services never showed payments with instances, none ready, within %s: %+v", eventually, m["payments"])
		}
		t.Run("mesh_error", func(t *testing.T) {
			// The client sidecar learns of it within the propagation bound.
			time.Sleep(propagation)
			checkMeshError(t, meshGet(c, "payments", "/", nil), 503, "no_ready_instances", "payments")
		})
		t.Run("admin_ready_follows_app", func(t *testing.T) {
			// "/ready (200 once registered and app ready)": the sidecar has
			// already told the control plane its app is not ready.
			if !poll(propagation, 50*time.Millisecond, func() bool {
				code, _, err := httpGet(s.AdminURL() + "/ready")
				return err == nil && code != 200
			}) {
				t.Errorf("admin /ready still 200 %s after the registry shows the instance not ready (its app on port %d is gone)", propagation, port)
			}
		})
	})
}

// TestWebSocketConnectFastPath: WebSocket and CONNECT go through a client
// sidecar and a server sidecar on the HTTP/1.1 fast path (the tunnel
// counter only the fast path keeps moves on both sidecars), an Upgrade the
// app does not take leaves the connection HTTP, and a CONNECT to a
// service carries raw TCP with half-close to the instance's app.
func TestWebSocketConnectFastPath(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	webPort := freePort(t)
	StartApp(t, "web-ws", webPort)
	web := StartSidecar(t, cp, SidecarOpts{Service: "web", AppPort: webPort})
	web.WaitRegistered(cp, eventually)
	inv := StartRun(t, cp, RunOpts{Service: "inv", AppArgs: []string{"--tcp-echo"}})
	client := StartClient(t, cp, nil)
	tunnels := func(s *Sidecar, listener, kind string) float64 {
		return metricSum(t, s, "weft_listener_tunnels_total", `listener="`+listener+`"`, `kind="`+kind+`"`, `engine="h1"`)
	}

	t.Run("websocket", func(t *testing.T) {
		websocketEcho(t, client.OutboundAddr(), 5, 300<<10)
		if n := tunnels(client, "outbound", "upgrade"); n < 1 {
			t.Errorf("client sidecar: weft_listener_tunnels_total{listener=outbound,kind=upgrade,engine=h1} = %v: the fast path did not carry the WebSocket", n)
		}
		if n := tunnels(web, "inbound", "upgrade"); n < 1 {
			t.Errorf("web sidecar: weft_listener_tunnels_total{listener=inbound,kind=upgrade,engine=h1} = %v", n)
		}
	})

	t.Run("upgrade_not_taken_stays_http", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", client.OutboundAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		br := bufio.NewReader(conn)
		for i, req := range []string{
			"GET /plain HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"GET /after HTTP/1.1\r\nHost: web\r\n\r\n",
		} {
			io.WriteString(conn, req)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			b, _ := io.ReadAll(resp.Body)
			var rep Reply
			if resp.StatusCode != 200 || json.Unmarshal(b, &rep) != nil || rep.Name != "web-ws" {
				t.Fatalf("request %d on one connection: status %d body %q", i+1, resp.StatusCode, truncate(string(b), 200))
			}
		}
	})

	t.Run("connect", func(t *testing.T) {
		before := metricSum(t, client, "weft_tcp_connections_total", `reporter="client"`, `destination_service="inv"`)
		conn, err := net.DialTimeout("tcp", client.OutboundAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(conn, "CONNECT inv:7 HTTP/1.1\r\nHost: inv:7\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT inv:7 through the outbound: %v %v (x-weft-error %q)", resp, err, resp.Header.Get("X-Weft-Error"))
		}
		// Bytes of no protocol, then half-close: the echo ends, and the
		// tunnel with it.
		payload := append([]byte("\x00\x01raw\r\n\r\n"), randBytes(t, 512<<10)...)
		errc := make(chan error, 1)
		go func() {
			_, err := conn.Write(payload)
			if err == nil {
				err = conn.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		got, err := io.ReadAll(br)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("echo through the tunnel: %d of %d bytes, equal %v, err %v", len(got), len(payload), bytes.Equal(got, payload), err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if n := tunnels(client, "outbound", "connect"); n < 1 {
			t.Errorf("client sidecar: no CONNECT tunnel counted on the fast path (%v)", n)
		}
		if n := tunnels(inv, "inbound", "connect"); n < 1 {
			t.Errorf("inv sidecar: no CONNECT tunnel counted on the fast path (%v)", n)
		}
		if !harness.PollEvery(eventually, 50*time.Millisecond, func() bool {
			return metricSum(t, client, "weft_tcp_connections_total", `reporter="client"`, `destination_service="inv"`) > before
		}) {
			t.Error("weft_tcp_connections_total{reporter=client,destination_service=inv} did not move")
		}
	})

	t.Run("connect_unknown_service", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", client.OutboundAddr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(15 * time.Second))
		io.WriteString(conn, "CONNECT nosuch:7 HTTP/1.1\r\nHost: nosuch:7\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 503 || resp.Header.Get("X-Weft-Error") != "unknown_service" {
			t.Errorf("CONNECT to an unknown service: %d %q, want 503 unknown_service", resp.StatusCode, resp.Header.Get("X-Weft-Error"))
		}
	})
}

// serveProto serves on a loopback port with only the protocols given,
// answering "PROTO METHOD PATH BODYLEN" — an app that speaks only h2c, or
// only HTTP/1.1.
func serveProto(t *testing.T, h2c bool) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	if h2c {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	srv := &http.Server{Protocols: &protos, ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s %s %d", r.Proto, r.Method, r.URL.Path, n)
		})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAppProtocolConversion: an HTTP/1.1 caller reaches an app that speaks
// only h2c (its sidecar runs --app-protocol h2c and converts), and an h2c
// caller reaches an app that speaks only HTTP/1.1.
func TestAppProtocolConversion(t *testing.T) {
	t.Parallel()
	cp := StartControl(t)
	h2Port := serveProto(t, true)
	// The h2c app really refuses HTTP/1.1: without conversion nothing works.
	if resp, err := plainClient.Get("http://" + addr(h2Port) + "/direct"); err == nil {
		resp.Body.Close()
		t.Fatalf("the h2c-only app answered HTTP/1.1 directly (%d)", resp.StatusCode)
	}
	h2app := StartSidecar(t, cp, SidecarOpts{Service: "h2only", AppPort: h2Port, Flags: []string{"--app-protocol", "h2c"}})
	h2app.WaitRegistered(cp, eventually)
	h1app := StartSidecar(t, cp, SidecarOpts{Service: "h1only", AppPort: serveProto(t, false), Flags: []string{"--app-protocol", "http1"}})
	h1app.WaitRegistered(cp, eventually)
	client := StartClient(t, cp, nil)

	t.Run("http1_caller_to_h2c_app", func(t *testing.T) {
		for _, tc := range []struct {
			method string
			body   []byte
			want   string
		}{{"GET", nil, "HTTP/2.0 GET /g 0"}, {"POST", randBytes(t, 100<<10), "HTTP/2.0 POST /g 102400"}} {
			req, _ := http.NewRequest(tc.method, "http://"+client.OutboundAddr()+"/g", bytes.NewReader(tc.body))
			req.Host = "h2only"
			resp, err := plainClient.Do(req)
			if err != nil {
				t.Fatalf("%s via the outbound: %v", tc.method, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 1 || resp.StatusCode != 200 || string(b) != tc.want {
				t.Errorf("%s http://h2only/g over HTTP/1.1: %s %d %q (x-weft-error %q), want %q", tc.method, resp.Proto, resp.StatusCode, b, resp.Header.Get("X-Weft-Error"), tc.want)
			}
		}
	})

	t.Run("h2c_caller_to_http1_app", func(t *testing.T) {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		h2c := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Protocols: &protos}}
		req, _ := http.NewRequest("PUT", "http://"+client.OutboundAddr()+"/p", strings.NewReader("hello"))
		req.Host = "h1only"
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatalf("h2c PUT via the outbound: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "HTTP/1.1 PUT /p 5" {
			t.Errorf("h2c PUT http://h1only/p: %s %d %q (x-weft-error %q), want HTTP/2 answer \"HTTP/1.1 PUT /p 5\"", resp.Proto, resp.StatusCode, b, resp.Header.Get("X-Weft-Error"))
		}
	})
}

// websocketEcho opens a WebSocket to ws://web/ws through the outbound at
// addr and has n text messages and one binary message of big bytes
// echoed.
func websocketEcho(t *testing.T, outbound string, n, big int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", outbound, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	cfg, err := websocket.NewConfig("ws://web/ws", "http://web/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("WebSocket handshake to ws://web/ws via %s: %v", outbound, err)
	}
	defer ws.Close()
	for i := range n {
		msg := fmt.Sprintf("hello %d", i)
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatalf("receive %d: %v", i, err)
		}
		if got != msg {
			t.Fatalf("echo %d: got %q, want %q", i, got, msg)
		}
	}
	blob := randBytes(t, big)
	if err := websocket.Message.Send(ws, blob); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := websocket.Message.Receive(ws, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Errorf("%d-byte binary message: echoed %d bytes, not equal", big, len(got))
	}
}
