// Command testapp is the backend the end-to-end tests run behind real weft
// sidecars. It is deliberately small and observable:
//
//   - HTTP (default): every path answers 200 with JSON
//     {"instance","name","path","query","host"} and header x-instance;
//     ?sleep=D sleeps D first; --delay D slows every reply; /ws is a
//     WebSocket echo; /env reports the weft-related environment;
//     POST /burn?for=D spins every CPU for D (at most 2m; 0 stops), to
//     make the instance busy for load-aware balancing.
//     ?status=N answers N; --fail-percent P answers 503 to P% of requests
//     (gRPC: UNAVAILABLE), changed at run time with
//     /_control/fail?percent=P; /_control/count reports requests served
//     (both sent to the app's own port, not through the mesh).
//   - --grpc: grpc.testing.TestService over h2c (UnaryCall, StreamingOutputCall,
//     FullDuplexCall) on the same port.
//   - --tcp-echo: raw TCP echo.
//
// It listens on --port or $PORT, after --ready-after, and prints
// "listening <unixnano>" once it accepts connections, and
// "first <unixnano> <path>" the first time it serves each path, so tests can
// measure from the app becoming ready to the first request it serves.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

var (
	port       = flag.Int("port", 0, "port to listen on (default $PORT)")
	name       = flag.String("name", "", "instance name reported in replies")
	delay      = flag.Duration("delay", 0, "delay every HTTP reply by this much")
	grpcMode   = flag.Bool("grpc", false, "serve grpc.testing.TestService (h2c) instead of HTTP")
	tcpEcho    = flag.Bool("tcp-echo", false, "serve a raw TCP echo instead of HTTP")
	readyAfter = flag.Duration("ready-after", 0, "wait this long before listening")
	exitAfter  = flag.Duration("exit-after", 0, "exit on its own after this long (with --exit-code)")
	exitCode   = flag.Int("exit-code", 0, "exit code used with --exit-after")
	logFile    = flag.String("log", "", "also append the log lines to this file")
	failPct    = flag.Int("fail-percent", 0, "answer 503 (gRPC: UNAVAILABLE) to this percentage of requests")
)

var (
	failPercent atomic.Int64
	served      atomic.Int64
	bodyBytes   atomic.Int64 // request body bytes received (/_control/count)
)

// failNow decides whether this request fails, at the set percentage.
func failNow() bool {
	p := failPercent.Load()
	return p > 0 && rand.Int64N(100) < p
}

var logOut struct {
	sync.Mutex
	f *os.File
}

// instanceID is what replies report as "instance": the mesh's instance id
// when run under `weft run`, else --name.
func instanceID() string {
	if id := os.Getenv("WEFT_INSTANCE_ID"); id != "" {
		return id
	}
	return *name
}

func logf(format string, args ...any) {
	// Unbuffered: the tests read these lines while the process runs. The
	// copy in --log does not depend on what the sidecar does with stdout.
	line := fmt.Sprintf(format+"\n", args...)
	logOut.Lock()
	defer logOut.Unlock()
	os.Stdout.WriteString(line)
	if logOut.f != nil {
		logOut.f.WriteString(line)
	}
}

// firstSeen logs the first request for each path (bounded).
type firstSeen struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (f *firstSeen) note(path string) {
	now := time.Now().UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[path] || len(f.seen) >= 1000 {
		return
	}
	f.seen[path] = true
	logf("first %d %s", now, path)
}

func main() {
	flag.Parse()
	if *port == 0 {
		p, err := strconv.Atoi(os.Getenv("PORT"))
		if err != nil || p <= 0 {
			fmt.Fprintln(os.Stderr, "testapp: need --port or $PORT")
			os.Exit(2)
		}
		*port = p
	}
	if *name == "" {
		*name = fmt.Sprintf("app-%d", *port)
	}
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(2)
		}
		logOut.f = f
	}
	watchParent()
	failPercent.Store(int64(*failPct))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *exitAfter > 0 {
		go func() {
			time.Sleep(*exitAfter)
			logf("exiting on my own with code %d", *exitCode)
			os.Exit(*exitCode)
		}()
	}

	if *readyAfter > 0 {
		logf("waiting %s before listening", *readyAfter)
		select {
		case <-time.After(*readyAfter):
		case <-ctx.Done():
			return
		}
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	logf("listening %d", time.Now().UnixNano())

	switch {
	case *grpcMode:
		serveGRPC(ctx, ln)
	case *tcpEcho:
		serveTCPEcho(ctx, ln)
	default:
		serveHTTP(ctx, ln)
	}
}

// watchParent exits when the parent dies (we are re-parented), so no backend
// outlives a killed sidecar or test binary.
func watchParent() {
	ppid := os.Getppid()
	go func() {
		for {
			time.Sleep(200 * time.Millisecond)
			if os.Getppid() != ppid {
				logf("parent %d gone, exiting", ppid)
				os.Exit(3)
			}
		}
	}()
}

type wsMsg struct {
	data []byte
	typ  byte
}

var wsCodec = websocket.Codec{
	Marshal: func(v any) ([]byte, byte, error) {
		m := v.(*wsMsg)
		return m.data, m.typ, nil
	},
	Unmarshal: func(data []byte, typ byte, v any) error {
		m := v.(*wsMsg)
		m.data = append([]byte(nil), data...)
		m.typ = typ
		return nil
	},
}

type reply struct {
	Instance string `json:"instance"`
	Name     string `json:"name"`
	Path     string `json:"path"`
	Query    string `json:"query"`
	Host     string `json:"host"`
	Method   string `json:"method"`
	Peer     string `json:"peer,omitempty"` // x-weft-peer-identity, as the sidecar set it
}

func serveHTTP(ctx context.Context, ln net.Listener) {
	fs := &firstSeen{seen: map[string]bool{}}
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Server{Handler: func(ws *websocket.Conn) {
		fs.note("/ws")
		// Echo whole messages, keeping each one's type (text or binary).
		for {
			var m wsMsg
			if err := wsCodec.Receive(ws, &m); err != nil {
				return
			}
			if err := wsCodec.Send(ws, &m); err != nil {
				return
			}
		}
	}})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		env := map[string]string{}
		for _, k := range []string{"PORT", "HTTP_PROXY", "http_proxy", "WEFT_OUTBOUND", "WEFT_SERVICE", "WEFT_INSTANCE_ID"} {
			if v, ok := os.LookupEnv(k); ok {
				env[k] = v
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(env)
	})
	mux.HandleFunc("POST /burn", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("for"))
		if err != nil || d < 0 || d > 2*time.Minute {
			http.Error(w, "want ?for=DURATION (0 to 2m)", http.StatusBadRequest)
			return
		}
		burn(d)
		logf("burn %d %s", time.Now().UnixNano(), d)
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/_control/fail", func(w http.ResponseWriter, r *http.Request) {
		p, err := strconv.Atoi(r.URL.Query().Get("percent"))
		if err != nil || p < 0 || p > 100 {
			http.Error(w, "want ?percent=0..100", http.StatusBadRequest)
			return
		}
		failPercent.Store(int64(p))
		logf("fail-percent %d", p)
	})
	mux.HandleFunc("/_control/count", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"served": served.Load(), "bodyBytes": bodyBytes.Load()})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fs.note(r.URL.Path)
		if st, err := strconv.Atoi(r.URL.Query().Get("status")); err == nil && st >= 200 && st <= 599 {
			w.Header().Set("x-instance", instanceID())
			http.Error(w, "status asked for", st)
			return
		}
		if failNow() {
			w.Header().Set("x-instance", instanceID())
			http.Error(w, "failing on purpose (--fail-percent)", http.StatusServiceUnavailable)
			return
		}
		if s := r.URL.Query().Get("sleep"); s != "" {
			if d, err := time.ParseDuration(s); err == nil && d > 0 && d < time.Minute {
				time.Sleep(d)
			}
		}
		if *delay > 0 {
			time.Sleep(*delay)
		}
		n, _ := io.Copy(io.Discard, r.Body)
		bodyBytes.Add(n)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("x-instance", instanceID())
		_ = json.NewEncoder(w).Encode(reply{
			Instance: instanceID(), Name: *name, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Method: r.Method,
			Peer: r.Header.Get("X-Weft-Peer-Identity"),
		})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		logf("signal received, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	logf("stopped")
}

// burning is the generation of the current burn; a new burn (or for=0)
// ends the previous one.
var burning atomic.Int64

// burn spins runtime.GOMAXPROCS goroutines for d.
func burn(d time.Duration) {
	gen := burning.Add(1)
	if d == 0 {
		return
	}
	until := time.Now().Add(d)
	for range runtime.GOMAXPROCS(0) {
		go func() {
			x := 0
			for burning.Load() == gen && time.Now().Before(until) {
				for range 10_000 {
					x++
				}
			}
			_ = x
		}()
	}
}

func serveTCPEcho(ctx context.Context, ln net.Listener) {
	go func() {
		<-ctx.Done()
		logf("signal received, shutting down")
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			logf("stopped")
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

type testServer struct {
	testpb.UnimplementedTestServiceServer
}

func echoStatus(s *testpb.EchoStatus) error {
	if s == nil || s.Code == 0 {
		return nil
	}
	return status.Error(codes.Code(s.Code), s.Message)
}

func (testServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	served.Add(1)
	if failNow() {
		return nil, status.Error(codes.Unavailable, "failing on purpose (--fail-percent)")
	}
	if err := echoStatus(req.ResponseStatus); err != nil {
		return nil, err
	}
	resp := &testpb.SimpleResponse{
		Payload:    req.GetPayload(),
		Username:   *name,
		OauthScope: instanceID(),
		Hostname:   *name,
	}
	if dl, ok := ctx.Deadline(); ok && req.FillServerId {
		// What is left of the grpc-timeout the call arrived with, in ms.
		resp.ServerId = "deadline-ms=" + strconv.FormatInt(time.Until(dl).Milliseconds(), 10)
	}
	return resp, nil
}

func pattern(n int32) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func (testServer) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	for _, p := range req.ResponseParameters {
		if p.IntervalUs > 0 {
			time.Sleep(time.Duration(p.IntervalUs) * time.Microsecond)
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: pattern(p.Size)}}); err != nil {
			return err
		}
	}
	return echoStatus(req.ResponseStatus)
}

func (testServer) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := echoStatus(req.ResponseStatus); err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func serveGRPC(ctx context.Context, ln net.Listener) {
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, testServer{})
	go func() {
		<-ctx.Done()
		logf("signal received, shutting down")
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			gs.Stop()
		}
	}()
	if err := gs.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	logf("stopped")
}
